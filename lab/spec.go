package lab

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/moornet/moor/dns/records"
	"github.com/moornet/moor/overlay/netconf"
)

// Defaults of a lab file.
const (
	DefaultUnderlay      = "172.31.0.0/24"
	DefaultHostSubnetLen = 24
	DefaultVNI           = 1
	DefaultLeaseTTL      = "30s"
	DefaultResync        = "5s"
	maxNameLen           = 24
	maxHostNameLen       = 12
	maxEtcdMembers       = 3
)

var namePattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)

// Spec is a lab file:
//
//	name: demo                    # default: the file's base name
//	underlay: 172.31.0.0/24       # the hosts' shared L2 segment (inside the lab's own netns)
//	etcd: {members: 1}            # 1, or 3 for a real quorum
//	agent: {resync: 5s}
//	networks:
//	  - name: ov
//	    subnet: 10.240.0.0/16
//	    hostSubnetLen: 24
//	    vni: 42
//	    dns: true                 # chain moor-dns (etcd records) and run a DNS sidecar per host
//	    ipMasq: false
//	    directRouting: false
//	    leaseTTL: 30s
//	    icc: false                # containers do not reach each other (default true)
//	    internal: false           # true: nothing forwarded out of or into the range
//	hosts:
//	  - name: h1
//	    containers: [web1, db1]   # attached to every network; or {name: x, networks: [ov]}
type Spec struct {
	Name     string        `yaml:"name" json:"name"`
	Underlay string        `yaml:"underlay" json:"underlay"`
	Etcd     EtcdSpec      `yaml:"etcd" json:"etcd"`
	Agent    AgentSpec     `yaml:"agent" json:"agent"`
	Networks []NetworkSpec `yaml:"networks" json:"networks"`
	Hosts    []HostSpec    `yaml:"hosts" json:"hosts"`
}

// EtcdSpec sizes the lab's etcd cluster.
type EtcdSpec struct {
	Members int `yaml:"members" json:"members"`
}

// AgentSpec tunes the hosts' agents.
type AgentSpec struct {
	Resync string `yaml:"resync" json:"resync"`
}

// NetworkSpec is one overlay network of the lab.
type NetworkSpec struct {
	Name          string `yaml:"name" json:"name"`
	Subnet        string `yaml:"subnet" json:"subnet"`
	HostSubnetLen int    `yaml:"hostSubnetLen" json:"hostSubnetLen"`
	VNI           int    `yaml:"vni" json:"vni"`
	DNS           bool   `yaml:"dns" json:"dns"`
	IPMasq        bool   `yaml:"ipMasq" json:"ipMasq"`
	DirectRouting bool   `yaml:"directRouting" json:"directRouting"`
	LeaseTTL      string `yaml:"leaseTTL" json:"leaseTTL"`
	// Encryption is the network's "encryption" ("" clear VXLAN, "wireguard").
	Encryption string `yaml:"encryption" json:"encryption"`
	// ICC is the network's "icc" (unset: true).
	ICC *bool `yaml:"icc" json:"icc,omitempty"`
	// Internal is the network's "internal": nothing forwarded out of or into its range.
	Internal bool `yaml:"internal" json:"internal,omitempty"`
}

// HostSpec is one host of the lab.
type HostSpec struct {
	Name       string          `yaml:"name" json:"name"`
	Containers []ContainerSpec `yaml:"containers" json:"containers"`
}

// ContainerSpec is one container; a bare name in the file means every network.
type ContainerSpec struct {
	Name     string   `yaml:"name" json:"name"`
	Networks []string `yaml:"networks" json:"networks"`
}

// UnmarshalYAML accepts a bare name or a mapping.
func (c *ContainerSpec) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		c.Name = n.Value
		return nil
	}
	type plain ContainerSpec
	return n.Decode((*plain)(c))
}

// SpecError names the field of a lab file that is wrong.
type SpecError struct {
	Field, Value, Reason string
}

func (e *SpecError) Error() string {
	return fmt.Sprintf("lab file: %s %q: %s", e.Field, e.Value, e.Reason)
}

func bad(field, value, format string, args ...any) error {
	return &SpecError{Field: field, Value: value, Reason: fmt.Sprintf(format, args...)}
}

// Load reads and checks a lab file.
func Load(path string) (*Spec, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	base := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	return Parse(data, base)
}

// Parse checks a lab file's content and fills its defaults; defaultName is used when the
// file names no lab.
func Parse(data []byte, defaultName string) (*Spec, error) {
	var s Spec
	if err := yaml.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("lab file: %w", err)
	}
	if s.Name == "" {
		s.Name = defaultName
	}
	return &s, s.check()
}

func (s *Spec) check() error {
	if len(s.Name) > maxNameLen || !namePattern.MatchString(s.Name) {
		return bad("name", s.Name, "must be 1-%d lowercase letters, digits and inner hyphens", maxNameLen)
	}
	if s.Underlay == "" {
		s.Underlay = DefaultUnderlay
	}
	u, err := netip.ParsePrefix(s.Underlay)
	if err != nil || !u.Addr().Is4() || u.Masked() != u || u.Bits() > 28 {
		return bad("underlay", s.Underlay, "must be an IPv4 subnet of at most /28")
	}
	if s.Etcd.Members == 0 {
		s.Etcd.Members = 1
	}
	if s.Etcd.Members != 1 && s.Etcd.Members != maxEtcdMembers {
		return bad("etcd.members", fmt.Sprint(s.Etcd.Members), "must be 1 or 3")
	}
	if s.Agent.Resync == "" {
		s.Agent.Resync = DefaultResync
	}
	if len(s.Networks) == 0 {
		return bad("networks", "", "a lab needs at least one network")
	}
	nets := map[string]bool{}
	for i := range s.Networks {
		if err := s.Networks[i].check(i, nets); err != nil {
			return err
		}
	}
	if len(s.Hosts) == 0 {
		return bad("hosts", "", "a lab needs at least one host")
	}
	if max := hostCapacity(u); len(s.Hosts) > max {
		return bad("hosts", fmt.Sprint(len(s.Hosts)), "underlay %s holds at most %d hosts", u, max)
	}
	hosts, ctrs := map[string]bool{}, map[string]bool{}
	for i := range s.Hosts {
		if err := s.Hosts[i].check(i, hosts, ctrs, nets); err != nil {
			return err
		}
	}
	return nil
}

func (n *NetworkSpec) check(i int, seen map[string]bool) error {
	field := fmt.Sprintf("networks[%d]", i)
	if !namePattern.MatchString(n.Name) || seen[n.Name] {
		return bad(field+".name", n.Name, "must be a unique lowercase name")
	}
	seen[n.Name] = true
	if n.HostSubnetLen == 0 {
		n.HostSubnetLen = DefaultHostSubnetLen
	}
	if n.VNI == 0 {
		n.VNI = DefaultVNI + i
	}
	if n.LeaseTTL == "" {
		n.LeaseTTL = DefaultLeaseTTL
	}
	if _, err := netip.ParsePrefix(n.Subnet); err != nil {
		return bad(field+".subnet", n.Subnet, "not a CIDR subnet")
	}
	if n.Encryption != "" && n.Encryption != netconf.EncryptionWireGuard {
		return bad(field+".encryption", n.Encryption, `must be "" (clear VXLAN) or %q`, netconf.EncryptionWireGuard)
	}
	return nil
}

func (h *HostSpec) check(i int, hosts, ctrs, nets map[string]bool) error {
	field := fmt.Sprintf("hosts[%d]", i)
	if len(h.Name) > maxHostNameLen || !namePattern.MatchString(h.Name) || hosts[h.Name] {
		return bad(field+".name", h.Name, "must be a unique lowercase name of at most %d characters", maxHostNameLen)
	}
	hosts[h.Name] = true
	for j, c := range h.Containers {
		cf := fmt.Sprintf("%s.containers[%d]", field, j)
		if records.ValidName(c.Name) != nil || strings.Contains(c.Name, ".") || ctrs[c.Name] {
			return bad(cf+".name", c.Name, "must be a unique DNS label")
		}
		ctrs[c.Name] = true
		for _, n := range c.Networks {
			if !nets[n] {
				return bad(cf+".networks", n, "no such network in the lab")
			}
		}
	}
	return nil
}

// hostCapacity is the number of host addresses of the underlay below its reserved top
// (the router and up to three etcd members).
func hostCapacity(u netip.Prefix) int {
	return 1<<(32-u.Bits()) - reservedTop - 1
}

// NetworksOf returns the networks a container attaches to.
func (s *Spec) NetworksOf(c ContainerSpec) []NetworkSpec {
	if len(c.Networks) == 0 {
		return s.Networks
	}
	var out []NetworkSpec
	for _, n := range s.Networks {
		for _, want := range c.Networks {
			if n.Name == want {
				out = append(out, n)
			}
		}
	}
	return out
}

// anyDNS reports whether a network of the lab has DNS.
func (s *Spec) anyDNS() bool {
	for _, n := range s.Networks {
		if n.DNS {
			return true
		}
	}
	return false
}
