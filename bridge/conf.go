package main

import (
	"fmt"

	"github.com/moornet/moor/link/shaping"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/firewall"
	"github.com/moornet/moor/plugins/statefs"
)

// defaultBridge is the reference bridge plugin's default, so that a conflist moved to moor
// by changing only its type keeps using the same bridge.
const defaultBridge = "cni0"

// mtuMin is the smallest MTU IPv4 allows (RFC 791); the kernel refuses less.
const (
	mtuMin  = 68
	mtuMax  = 65535
	vlanMax = 4094
)

// vlanTrunk is one entry of vlanTrunk: a single id or a range.
type vlanTrunk struct {
	MinID *int `json:"minID,omitempty"`
	MaxID *int `json:"maxID,omitempty"`
	ID    *int `json:"id,omitempty"`
}

// conf is every field of the reference bridge plugin, with the same meaning, plus
// Docker's semantics (isolation, internal) and the firewall backend choice.
type conf struct {
	plugins.NetConf
	shaping.Conf

	BrName                    string       `json:"bridge"`
	IsGW                      bool         `json:"isGateway"`
	IsDefaultGW               bool         `json:"isDefaultGateway"`
	ForceAddress              bool         `json:"forceAddress"`
	IPMasq                    bool         `json:"ipMasq"`
	IPMasqBackend             string       `json:"ipMasqBackend,omitempty"`
	MTU                       int          `json:"mtu"`
	HairpinMode               bool         `json:"hairpinMode"`
	PromiscMode               bool         `json:"promiscMode"`
	Vlan                      int          `json:"vlan"`
	VlanTrunk                 []*vlanTrunk `json:"vlanTrunk,omitempty"`
	PreserveDefaultVlan       bool         `json:"preserveDefaultVlan"`
	MacSpoofChk               bool         `json:"macspoofchk"`
	EnableDad                 bool         `json:"enabledad"`
	DisableContainerInterface bool         `json:"disableContainerInterface"`
	PortIsolation             bool         `json:"portIsolation"`

	// Isolation keeps containers of different moor bridge networks apart (Docker's
	// default). Default true.
	Isolation *bool `json:"isolation,omitempty"`
	// Internal: no route out and no masquerade (docker network create --internal).
	Internal bool `json:"internal"`
	// PublishLoopback makes IPv4 ports published without hostIP answer on the host's
	// 127.0.0.1 too (Docker's behaviour). Off by default: a port published on every
	// address would otherwise take over a host service on 127.0.0.1 that starts after it;
	// a mapping with hostIP 127.0.0.1 asks for loopback port by port.
	PublishLoopback bool `json:"publishLoopback"`
	// FirewallBackend is "nftables", "iptables" or "" (detect). ipMasqBackend, the
	// reference's name, is read when this is unset.
	FirewallBackend string `json:"firewallBackend,omitempty"`

	fineOptions

	trunkIDs []int  // vlanTrunk expanded
	fwLock   string // the host-wide firewall lock, in the run directory
}

func loadConf(call *plugins.Call) (*conf, error) {
	c := &conf{BrName: defaultBridge, PreserveDefaultVlan: true}
	if err := plugins.LoadConf(call, c); err != nil {
		return nil, err
	}
	c.fwLock = firewall.LockFileIn(statefs.RunDir(call.Getenv))
	return c, nil
}

// isolated reports whether isolation between networks is on.
func (c *conf) isolated() bool { return c.Isolation == nil || *c.Isolation }

// Validate checks ranges and combinations, naming the field and value.
func (c *conf) Validate(*plugins.Call) error {
	if err := plugins.SpecIfName(c.BrName); err != nil {
		return plugins.InvalidField("bridge", c.BrName, err.Error())
	}
	if c.MTU != 0 && (c.MTU < mtuMin || c.MTU > mtuMax) {
		return plugins.InvalidField("mtu", c.MTU, fmt.Sprintf("must be 0 (the default-route link's) or between %d and %d", mtuMin, mtuMax))
	}
	if c.Vlan < 0 || c.Vlan > vlanMax {
		return plugins.InvalidField("vlan", c.Vlan, fmt.Sprintf("must be between 0 and %d", vlanMax))
	}
	ids, err := expandTrunk(c.VlanTrunk)
	if err != nil {
		return err
	}
	c.trunkIDs = ids
	if c.HairpinMode && c.PromiscMode {
		return plugins.InvalidField("promiscMode", true, "cannot be combined with hairpinMode")
	}
	if c.DisableContainerInterface && c.IPAM.Type != "" {
		return plugins.InvalidField("disableContainerInterface", true, fmt.Sprintf("cannot be combined with ipam (type %q): a down interface cannot hold addresses", c.IPAM.Type))
	}
	if c.IsDefaultGW {
		c.IsGW = true
	}
	if c.Internal && c.IsDefaultGW {
		return plugins.InvalidField("isDefaultGateway", true, "an internal network has no route out; drop one of internal and isDefaultGateway")
	}
	for _, f := range []struct{ name, value string }{{"firewallBackend", c.FirewallBackend}, {"ipMasqBackend", c.IPMasqBackend}} {
		switch f.value {
		case "", "nftables", "iptables":
		default:
			return plugins.InvalidField(f.name, f.value, `must be "nftables" or "iptables"`)
		}
	}
	if c.FirewallBackend != "" && c.IPMasqBackend != "" && c.FirewallBackend != c.IPMasqBackend {
		return plugins.InvalidField("ipMasqBackend", c.IPMasqBackend, fmt.Sprintf("contradicts firewallBackend %q", c.FirewallBackend))
	}
	if c.FirewallBackend == "" {
		c.FirewallBackend = c.IPMasqBackend
	}
	if err := c.validateFine(); err != nil {
		return err
	}
	return c.Conf.Load(c.RuntimeConfig.Bandwidth)
}

// vlanFiltering reports whether the config needs bridge VLAN filtering.
func (c *conf) vlanFiltering() bool { return c.Vlan != 0 || len(c.trunkIDs) > 0 }

// expandTrunk lists the distinct VLAN ids of vlanTrunk. Each id is kept once, so the
// list never exceeds vlanMax entries however many (overlapping) ranges the config repeats.
func expandTrunk(trunks []*vlanTrunk) ([]int, error) {
	var ids []int
	var seen [vlanMax + 1]bool
	add := func(id int) {
		if !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	for i, t := range trunks {
		field := fmt.Sprintf("vlanTrunk[%d]", i)
		switch {
		case t == nil: // [null] decodes to a nil entry
			return nil, plugins.InvalidField(field, "null", "needs id, or both minID and maxID")
		case t.ID != nil:
			if *t.ID < 1 || *t.ID > vlanMax {
				return nil, plugins.InvalidField(field+".id", *t.ID, fmt.Sprintf("must be between 1 and %d", vlanMax))
			}
			add(*t.ID)
		case t.MinID != nil && t.MaxID != nil:
			if *t.MinID < 1 || *t.MaxID > vlanMax || *t.MinID > *t.MaxID {
				return nil, plugins.InvalidField(field, fmt.Sprintf("%d-%d", *t.MinID, *t.MaxID), fmt.Sprintf("minID and maxID must satisfy 1 <= minID <= maxID <= %d", vlanMax))
			}
			for id := *t.MinID; id <= *t.MaxID; id++ {
				add(id)
			}
		default:
			return nil, plugins.InvalidField(field, "{}", "needs id, or both minID and maxID")
		}
	}
	return ids, nil
}

// errNoVlanFiltering is what a kernel without bridge VLAN filtering gives for vlan and
// vlanTrunk configs.
func errNoVlanFiltering(bridge string, cause error) error {
	return codes.Wrap(codes.KernelFeature, fmt.Sprintf("vlan/vlanTrunk need bridge VLAN filtering on %s, which this kernel refused (CONFIG_BRIDGE_VLAN_FILTERING)", bridge), cause)
}
