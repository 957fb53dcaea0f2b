// Package resultjson writes a CNI result of spec 1.x (current.Result: cniVersion,
// interfaces, ips, routes, dns) as the exact bytes the CNI library's PrintTo writes, without
// encoding/json's reflection. A plugin prints one result per ADD; in a fresh process the
// library's way (marshal, unmarshal into a map, marshal again, indent) costs about
// 0.15-0.2 ms of an ADD, most of it encoding/json's first-use analysis of the result's
// types, while the shape is small and fixed.
//
// The bytes are the library's: keys sorted at every level (its map round trip sorts them),
// four-space indentation, fields left out when empty as the library's omitempty tags do,
// "dns" left out when it has no value, numbers as encoding/json writes them, and strings
// escaped as encoding/json escapes them (a string that needs escaping is handed to
// encoding/json itself). Tests compare both on many results, spec version by version.
//
// What it is not: a general encoder. Results of the 0.x specs (a different shape) and
// results holding a field this package does not know are left to the library
// (Append reports false).
package resultjson

import (
	"encoding/json"
	"net"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// Append appends r as current.Result.PrintTo writes it; ok is false when r holds a
// gateway that is not an IP address (which the library refuses to print), and then buf
// is returned unchanged.
func Append(buf []byte, r *current.Result) (out []byte, ok bool) {
	for _, ip := range r.IPs {
		if ip != nil && !ipOK(ip.Gateway) {
			return buf, false
		}
	}
	for _, rt := range r.Routes {
		if rt != nil && !ipOK(rt.GW) {
			return buf, false
		}
	}
	w := writer{buf: buf}
	w.open('{')
	if r.CNIVersion != "" {
		w.key("cniVersion")
		w.str(r.CNIVersion)
	}
	if !r.DNS.IsEmpty() {
		w.key("dns")
		w.dns(&r.DNS)
	}
	list(&w, "interfaces", r.Interfaces, w.iface)
	list(&w, "ips", r.IPs, w.ipConfig)
	list(&w, "routes", r.Routes, w.route)
	w.close('}')
	return w.buf, true
}

// list writes a non-empty list under key k, a nil element as null.
func list[T any](w *writer, k string, l []*T, write func(*T)) {
	if len(l) == 0 {
		return
	}
	w.key(k)
	w.open('[')
	for _, e := range l {
		w.elem()
		if e == nil {
			w.buf = append(w.buf, "null"...)
			continue
		}
		write(e)
	}
	w.close(']')
}

// writer writes indented JSON; first tracks whether the open object or array is still
// empty, one entry per level.
type writer struct {
	buf   []byte
	first []bool
}

func (w *writer) open(c byte) {
	w.buf = append(w.buf, c)
	w.first = append(w.first, true)
}

func (w *writer) close(c byte) {
	empty := w.first[len(w.first)-1]
	w.first = w.first[:len(w.first)-1]
	if !empty {
		w.newline()
	}
	w.buf = append(w.buf, c)
}

func (w *writer) newline() {
	w.buf = append(w.buf, '\n')
	for range w.first {
		w.buf = append(w.buf, "    "...)
	}
}

// elem starts the next element of an object or array.
func (w *writer) elem() {
	top := len(w.first) - 1
	if !w.first[top] {
		w.buf = append(w.buf, ',')
	}
	w.first[top] = false
	w.newline()
}

func (w *writer) key(k string) {
	w.elem()
	w.str(k)
	w.buf = append(w.buf, ": "...)
}

// str writes s as the library's round trip leaves it (HTML-safe): plain printable ASCII
// directly, anything else through encoding/json, after replacing each invalid UTF-8 byte
// with U+FFFD as the round trip's first pass does.
func (w *writer) str(s string) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			b, _ := json.Marshal(validUTF8(s)) // a string always marshals
			w.buf = append(w.buf, b...)
			return
		}
	}
	w.buf = append(w.buf, '"')
	w.buf = append(w.buf, s...)
	w.buf = append(w.buf, '"')
}

// validUTF8 replaces every byte that does not start a valid UTF-8 sequence with U+FFFD.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for len(s) > 0 {
		r, size := utf8.DecodeRuneInString(s)
		if r == utf8.RuneError && size == 1 {
			b.WriteRune(utf8.RuneError)
		} else {
			b.WriteString(s[:size])
		}
		s = s[size:]
	}
	return b.String()
}

func (w *writer) strField(k, v string) {
	if v != "" {
		w.key(k)
		w.str(v)
	}
}

// intField writes a number that went through the library's map round trip (a float64):
// integers are written as they are up to 2^53, as encoding/json writes such a float.
func (w *writer) intField(k string, v int) {
	if v != 0 {
		w.key(k)
		w.num(v)
	}
}

func (w *writer) num(v int) {
	if v > 1<<53 || v < -(1<<53) {
		b, _ := json.Marshal(float64(v))
		w.buf = append(w.buf, b...)
		return
	}
	w.buf = strconv.AppendInt(w.buf, int64(v), 10)
}

func (w *writer) strList(k string, l []string) {
	if len(l) == 0 {
		return
	}
	w.key(k)
	w.open('[')
	for _, s := range l {
		w.elem()
		w.str(s)
	}
	w.close(']')
}

func (w *writer) dns(d *types.DNS) {
	w.open('{')
	w.strField("domain", d.Domain)
	w.strList("nameservers", d.Nameservers)
	w.strList("options", d.Options)
	w.strList("search", d.Search)
	w.close('}')
}

func (w *writer) iface(i *current.Interface) {
	w.open('{')
	w.strField("mac", i.Mac)
	w.intField("mtu", i.Mtu)
	w.key("name")
	w.str(i.Name)
	w.strField("pciID", i.PciID)
	w.strField("sandbox", i.Sandbox)
	w.strField("socketPath", i.SocketPath)
	w.close('}')
}

// ipOK: an IP that net.IP's MarshalText takes (empty, 4 or 16 bytes).
func ipOK(ip net.IP) bool { return len(ip) == 0 || len(ip) == net.IPv4len || len(ip) == net.IPv6len }

// ipString is net.IP's text form (MarshalText), "" for an empty IP.
func ipString(ip net.IP) string {
	if len(ip) == 0 {
		return ""
	}
	return ip.String()
}

func (w *writer) ipConfig(c *current.IPConfig) {
	w.open('{')
	w.key("address")
	w.str(c.Address.String())
	w.strField("gateway", ipString(c.Gateway))
	if c.Interface != nil {
		w.key("interface")
		w.num(*c.Interface)
	}
	w.close('}')
}

func (w *writer) route(r *types.Route) {
	w.open('{')
	w.intField("advmss", r.AdvMSS)
	w.key("dst")
	w.str(r.Dst.String())
	w.strField("gw", ipString(r.GW))
	w.intField("mtu", r.MTU)
	w.intField("priority", r.Priority)
	if r.Scope != nil {
		w.key("scope")
		w.num(*r.Scope)
	}
	if r.Table != nil {
		w.key("table")
		w.num(*r.Table)
	}
	w.close('}')
}
