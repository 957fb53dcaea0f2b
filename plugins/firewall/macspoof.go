package firewall

import (
	"fmt"
	"net"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
)

// MAC spoof check (the reference bridge plugin's macspoofchk): frames that enter the
// bridge from a container's port with a source MAC other than the container's are dropped.
// It lives in its own table "bridge moor" (family bridge: it must see frames, not
// packets) with one base chain at bridge prerouting and one labelled rule per attachment,
// whatever the IP firewall backend is: like the reference, it always uses nftables. Each
// rule is recorded in the firewall State (AddMacSpoof, forgotten by DelMacSpoof first) so
// that a Repairer puts it back after a reload.

const (
	macSpoofTable = "moor"
	macSpoofChain = "macspoof"
	macSpoofRule  = "macspoof"
	// ethSrcOffset and ethAddrLen locate the source MAC in the Ethernet header.
	ethSrcOffset = 6
	ethAddrLen   = 6
)

// MacSpoof restricts one attachment's frames to its MAC.
type MacSpoof struct {
	Network     string
	ContainerID string
	IfName      string
	HostIf      string // the container's bridge port (host end of the veth)
	MAC         net.HardwareAddr
}

func macSpoofTableRef() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyBridge, Name: macSpoofTable}
}

func macSpoofLabel(network, containerID, ifName string) label {
	return label{Net: network, ID: containerID, If: ifName, Rule: macSpoofRule}
}

// AddMacSpoof installs m's rule, replacing any rule the same attachment had, in one batch.
func AddMacSpoof(opts Options, m MacSpoof) error {
	for _, f := range []struct{ name, v string }{{"network", m.Network}, {"containerID", m.ContainerID}, {"ifName", m.IfName}} {
		if err := checkLabelValue(f.name, f.v); err != nil {
			return err
		}
	}
	if len(m.MAC) != ethAddrLen {
		return invalid("mac", m.MAC.String(), "not a 48-bit MAC address")
	}
	b := newNFT(opts.withDefaults())
	c, done, err := b.begin()
	if err != nil {
		return err
	}
	defer done()
	t := c.AddTable(macSpoofTableRef())
	policy := nftables.ChainPolicyAccept
	chain := c.AddChain(&nftables.Chain{
		Name: macSpoofChain, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityFilter, Policy: &policy,
	})
	if err := b.deleteMacSpoofRules(c, t, m.Network, m.ContainerID, m.IfName); err != nil {
		return err
	}
	l := macSpoofLabel(m.Network, m.ContainerID, m.IfName)
	c.AddRule(&nftables.Rule{Table: t, Chain: chain, UserData: userdata.AppendString(nil, userdata.TypeComment, l.String()),
		Exprs: join(
			metaCmp(expr.MetaKeyIIFNAME, expr.CmpOpEq, ifname(m.HostIf)),
			one(&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: ethSrcOffset, Len: ethAddrLen}),
			one(cmp(expr.CmpOpNeq, m.MAC)),
			one(verdict(expr.VerdictDrop, "")),
		)})
	return b.opts.recorded("record macspoof", func(st State) (func(), error) { return st.saveMacSpoof(m) }, func() error {
		if err := c.Flush(); err != nil {
			return b.fail("add macspoof rule", err)
		}
		return nil
	})
}

// DelMacSpoof removes the attachment's rule; nothing there is success.
func DelMacSpoof(opts Options, network, containerID, ifName string) error {
	b := newNFT(opts.withDefaults())
	c, done, err := b.begin()
	if err != nil {
		return err
	}
	defer done()
	k := AttachmentKey{Network: network, ContainerID: containerID, IfName: ifName}
	if err := b.opts.forget(func(st State) error { return st.removeMacSpoof(k) }); err != nil {
		return err
	}
	if err := b.deleteMacSpoofRules(c, macSpoofTableRef(), network, containerID, ifName); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return b.fail("delete macspoof rule", err)
	}
	return nil
}

// MacSpoofAttachments lists the attachments of network that have a rule, for GC.
func MacSpoofAttachments(opts Options, network string) ([]AttachmentKey, error) {
	all, err := macSpoofKeys(opts)
	var keys []AttachmentKey
	for _, k := range all {
		if k.Network == network {
			keys = append(keys, k)
		}
	}
	return keys, err
}

// CheckMacSpoof reports (*MissingRulesError) when the attachment's rule is missing.
func CheckMacSpoof(opts Options, network, containerID, ifName string) error {
	keys, err := MacSpoofAttachments(opts, network)
	if err != nil {
		return err
	}
	for _, k := range keys {
		if k.ContainerID == containerID && k.IfName == ifName {
			return nil
		}
	}
	return &MissingRulesError{Backend: KindNFTables, Object: fmt.Sprintf("attachment %s/%s/%s", network, containerID, ifName), Missing: []string{"rule=" + macSpoofRule}}
}

func (b *nftBackend) deleteMacSpoofRules(c *nftables.Conn, t *nftables.Table, network, containerID, ifName string) error {
	rules, err := b.readLabels(c, t, macSpoofChain, containerID)
	if err != nil {
		return err
	}
	want := macSpoofLabel(network, containerID, ifName).key()
	for _, r := range rules {
		if r.label.Rule == macSpoofRule && r.label.key() == want {
			if err := c.DelRule(&nftables.Rule{Table: t, Chain: &nftables.Chain{Name: macSpoofChain, Table: t}, Handle: r.handle}); err != nil {
				return b.fail("delete macspoof rule", err)
			}
		}
	}
	return nil
}
