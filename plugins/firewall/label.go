package firewall

import (
	"fmt"
	"hash/fnv"
	"strings"
)

// labelPrefix starts every label moor writes; rules whose comment does not start with it
// are not moor's and are never touched.
const labelPrefix = "moor"

// maxLabelLen bounds a label: an nftables userdata TLV holds 255 bytes (with the NUL
// libnftables expects), an iptables comment 256.
const maxLabelLen = 254

// label names one rule: who made it and which rule it is. Its text form is
// "moor k=v k=v ..." with the keys in the order of labelKeys; values hold no spaces.
type label struct {
	Base  string // skeleton rule of the backend (jumps from built-in/base chains)
	Net   string // network name
	ID    string // container ID (attachment rules)
	If    string // interface name (attachment rules)
	Rule  string // which rule of the network or attachment
	Fam   string // "4" or "6" (port rules)
	Proto string // tcp, udp, sctp (port rules)
	Host  string // host IP, "*" for every address of the family (port rules)
	Port  string // host port (port rules)
	Sum   string // checksum of the rule's content: a changed rule gets a changed label
}

var labelKeys = []string{"base", "net", "id", "if", "rule", "fam", "proto", "host", "port", "sum"}

func (l *label) field(key string) *string {
	switch key {
	case "base":
		return &l.Base
	case "net":
		return &l.Net
	case "id":
		return &l.ID
	case "if":
		return &l.If
	case "rule":
		return &l.Rule
	case "fam":
		return &l.Fam
	case "proto":
		return &l.Proto
	case "host":
		return &l.Host
	case "port":
		return &l.Port
	case "sum":
		return &l.Sum
	}
	return nil
}

func (l label) String() string {
	var b strings.Builder
	b.WriteString(labelPrefix)
	for _, k := range labelKeys {
		if v := *l.field(k); v != "" {
			b.WriteString(" " + k + "=" + v)
		}
	}
	return b.String()
}

// describe is the label without its owner and checksum, for messages: "rule=dnat fam=4 ...".
func (l label) describe() string {
	l.Net, l.ID, l.If, l.Sum = "", "", "", ""
	return strings.TrimPrefix(l.String(), labelPrefix+" ")
}

// key returns the attachment the label belongs to (empty ID for network rules).
func (l label) key() AttachmentKey {
	return AttachmentKey{Network: l.Net, ContainerID: l.ID, IfName: l.If}
}

func (l label) isAttachment() bool { return l.ID != "" }

// parseLabel reads a label; ok is false for anything moor did not write.
func parseLabel(s string) (label, bool) {
	var l label
	fields := strings.Fields(s)
	if len(fields) < 2 || fields[0] != labelPrefix {
		return l, false
	}
	for _, f := range fields[1:] {
		k, v, found := strings.Cut(f, "=")
		if !found || v == "" {
			return l, false
		}
		p := l.field(k)
		if p == nil {
			return l, false
		}
		*p = v
	}
	return l, true
}

// checkLabelValue rejects values that would break a label.
func checkLabelValue(field, v string) error {
	if v == "" {
		return invalid(field, v, "must not be empty")
	}
	if strings.ContainsAny(v, " \t\r\n\"'=\\") {
		return invalid(field, v, `must not contain whitespace, quotes, "=" or "\"`)
	}
	return nil
}

// labelsMissing returns the describe() of every wanted label not in have.
func labelsMissing(want []label, have map[string]bool) []string {
	var missing []string
	for _, l := range want {
		if !have[l.String()] {
			missing = append(missing, l.describe())
		}
	}
	return missing
}

// contentSum is a short checksum of a rule's content, for label.Sum.
func contentSum(parts ...any) string {
	h := fnv.New32a()
	for _, p := range parts {
		fmt.Fprintf(h, "%T%+v;", p, p)
	}
	return fmt.Sprintf("%08x", h.Sum32())
}

// sameLabels tells whether two label lists are equal, order included.
func sameLabels(a, b []label) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
