package shaping

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/namehash"
)

// Ifb names the ifb device of one attachment.
type Ifb struct {
	Name    string // "mbw" + 12 hex digits: fits IFNAMSIZ
	AltName string // altPrefix + network hash + "-" + attachment hash
}

// altPrefix starts the altname of every moor ifb.
const altPrefix = "moorbw-"

// IfbFor is the ifb of the attachment (network, containerID, ifName).
func IfbFor(network, containerID, ifName string) Ifb {
	att := namehash.Sum256([]byte(network + "\x00" + containerID + "\x00" + ifName))
	h := hex.EncodeToString(att[:16])
	return Ifb{Name: "mbw" + h[:12], AltName: networkPrefix(network) + h}
}

// networkPrefix starts the altnames of one network's ifbs.
func networkPrefix(network string) string {
	n := namehash.Sum256([]byte(network))
	return altPrefix + hex.EncodeToString(n[:4]) + "-"
}

// stepDone is called after each step of Apply with the step's name; a test makes it fail
// to check that what the steps before made is rolled back.
var stepDone = func(step string) error { return nil }

// in6AddrGenModeNone is the kernel's IN6_ADDR_GEN_MODE_NONE (include/uapi/linux/if_link.h):
// no IPv6 address is made when the link comes up.
const in6AddrGenModeNone = 1

var (
	rootHandle    = netlink.MakeHandle(1, 0)
	ingressHandle = netlink.MakeHandle(0xffff, 0)
)

// Apply shapes dev (in the netns of h) as p says, with ifb for what dev receives, and
// registers the undo of every step. A burst under dev's MTU is code 7.
//
// Every qdisc goes onto a device that is down where that is in Apply's hands: grafting
// a root or an ingress qdisc onto a device that is up makes the kernel stop the device's
// queues and wait for an RCU grace period (qdisc_graft, dev_deactivate, synchronize_net)
// before the swap, once per qdisc; on a device that is down the graft is a pointer swap,
// and bringing the device up attaches what is there. So the ifb is created down, gets its
// tbf, and comes up before anything is redirected to it; dev's state is the caller's
// (AddHost brings a host end that was created down up after this). Messages: one per
// qdisc, filter and ifb step, no dump, no lookup of what this ADD made (see createIfb).
func Apply(h netlinksafe.Handle, dev netlink.Link, p Plan, ifb Ifb, undo *plugins.Undo) error {
	name, index := dev.Attrs().Name, dev.Attrs().Index
	if p.In != nil {
		// Before the first side effect: a refused burst leaves nothing to roll back.
		if err := checkMTU(p.In, dev.Attrs().MTU); err != nil {
			return err
		}
	}
	if p.Out != nil {
		if err := addTbf(h, dev, p.Out); err != nil {
			return err
		}
		undo.Push("delete tbf on "+name, func() error { return ignoreGone(h.QdiscDel(rootTbf(index))) })
		if err := stepDone("tbf"); err != nil {
			return err
		}
	}
	if p.In == nil {
		return nil
	}
	link, err := createIfb(h, ifb, dev.Attrs().MTU)
	if err != nil {
		return err
	}
	undo.Push("delete ifb "+ifb.Name, func() error { return ignoreGone(h.LinkDel(link)) })
	if err := stepDone("ifb"); err != nil {
		return err
	}
	if err := addTbf(h, link, p.In); err != nil {
		return err
	}
	if err := stepDone("ifb tbf"); err != nil {
		return err
	}
	// Up before the redirect exists: mirred drops what it sends to a device that is down.
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("setting ifb %s up: %w", ifb.Name, err)
	}
	if err := stepDone("ifb up"); err != nil {
		return err
	}
	ingress := &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: index, Parent: netlink.HANDLE_INGRESS, Handle: ingressHandle}}
	if err := h.QdiscAdd(ingress); err != nil {
		return fmt.Errorf("adding an ingress qdisc on %s: %w", name, err)
	}
	undo.Push("delete ingress qdisc on "+name, func() error { return ignoreGone(h.QdiscDel(ingress)) })
	if err := stepDone("ingress"); err != nil {
		return err
	}
	filter := &netlink.U32{
		FilterAttrs: netlink.FilterAttrs{LinkIndex: index, Parent: ingressHandle, Priority: 1, Protocol: unix.ETH_P_ALL},
		Sel:         &netlink.TcU32Sel{Flags: netlink.TC_U32_TERMINAL, Keys: []netlink.TcU32Key{{}}},
		Actions:     []netlink.Action{netlink.NewMirredAction(link.Attrs().Index)},
	}
	if err := h.FilterAdd(filter); err != nil {
		return fmt.Errorf("redirecting %s's ingress to %s: %w", name, ifb.Name, err)
	}
	return stepDone("filter")
}

func rootTbf(index int) *netlink.Tbf {
	return &netlink.Tbf{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: index, Handle: rootHandle, Parent: netlink.HANDLE_ROOT}}
}

func addTbf(h netlinksafe.Handle, link netlink.Link, r *Rate) error {
	if err := checkMTU(r, link.Attrs().MTU); err != nil {
		return err
	}
	tbf, err := tbfParams(r.Rate, r.Burst)
	if err != nil {
		return plugins.InvalidField(r.Dir+"Burst", r.Burst, err.Error())
	}
	tbf.QdiscAttrs = rootTbf(link.Attrs().Index).QdiscAttrs
	if err := h.QdiscAdd(tbf); err != nil {
		return fmt.Errorf("adding tbf (%s) on %s: %w", r.Dir, link.Attrs().Name, err)
	}
	return nil
}

// checkMTU refuses a burst under one packet: tbf would drop every full-size packet.
func checkMTU(r *Rate, mtu int) error {
	tbf, err := tbfParams(r.Rate, r.Burst)
	if err != nil {
		return plugins.InvalidField(r.Dir+"Burst", r.Burst, err.Error())
	}
	if mtu > 0 && burstBytes(tbf) < uint64(mtu) {
		return plugins.InvalidField(r.Dir+"Burst", r.Burst, fmt.Sprintf("below one packet of the interface's MTU %d (%d bits)", mtu, mtu*8))
	}
	return nil
}

// createIfb creates the attachment's ifb, down, with its altname and without IPv6
// addressing, and returns it with its index. One of the same name left by an attachment
// of the same key (a crashed ADD) is replaced; any other device of that name is an error.
//
// No lookup before the create: the create is exclusive (NLM_F_EXCL), so a device of that
// name fails it with EEXIST, and only then is it looked at. No lookup after it either:
// vishvananda/netlink's LinkAdd already asks the kernel for the new device's index and
// writes it into the link it was given, which is all the later steps need.
func createIfb(h netlinksafe.Handle, ifb Ifb, mtu int) (netlink.Link, error) {
	for replaced := false; ; replaced = true {
		attrs := netlink.NewLinkAttrs()
		attrs.Name, attrs.MTU = ifb.Name, mtu
		link := &netlink.Ifb{LinkAttrs: attrs}
		err := h.LinkAdd(link)
		if err == nil {
			if link.Index == 0 { // created, then gone before LinkAdd's lookup
				return nil, fmt.Errorf("creating ifb %s: it vanished after its creation", ifb.Name)
			}
			if err := h.LinkAddAltName(link, ifb.AltName); err != nil {
				_ = ignoreGone(h.LinkDel(link))
				return nil, fmt.Errorf("naming ifb %s %s: %w", ifb.Name, ifb.AltName, err)
			}
			link.AltNames = []string{ifb.AltName}
			// No IPv6 addressing: the ifb carries only what mirred redirects to it, so
			// a link-local address would be kernel work for nothing when it comes up
			// (the address, its routes, DAD and MLD), and two more entries in the IPv6
			// table that every later link event of the host walks. A kernel without
			// IPv6 has nothing to turn off.
			if err := h.LinkSetIP6AddrGenMode(link, in6AddrGenModeNone); err != nil && !errors.Is(err, unix.EAFNOSUPPORT) {
				_ = ignoreGone(h.LinkDel(link))
				return nil, fmt.Errorf("turning IPv6 addressing off on ifb %s: %w", ifb.Name, err)
			}
			return link, nil
		}
		if !errors.Is(err, unix.EEXIST) || replaced {
			return nil, fmt.Errorf("creating ifb %s: %w", ifb.Name, err)
		}
		old, lerr := h.LinkByName(ifb.Name)
		if lerr != nil {
			return nil, fmt.Errorf("creating ifb %s: %w", ifb.Name, err)
		}
		if !hasAltName(old, ifb.AltName) {
			return nil, fmt.Errorf("creating ifb %s: a %s device of that name exists", ifb.Name, old.Type())
		}
		if err := h.LinkDel(old); err != nil && !plugins.IsNotFound(err) {
			return nil, fmt.Errorf("replacing stale ifb %s: %w", ifb.Name, err)
		}
	}
}

func hasAltName(l netlink.Link, name string) bool {
	for _, a := range l.Attrs().AltNames {
		if a == name {
			return true
		}
	}
	return false
}

func ignoreGone(err error) error {
	if err == nil || plugins.IsNotFound(err) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) {
		return nil
	}
	return err
}

// Check compares dev's shaping with p and names every qdisc, filter or ifb that is
// missing or differs.
func Check(h netlinksafe.Handle, dev netlink.Link, p Plan, ifb Ifb) []string {
	var problems []string
	name := dev.Attrs().Name
	if p.Out != nil {
		problems = append(problems, checkTbf(h, dev, p.Out)...)
	}
	if p.In == nil {
		return problems
	}
	link, err := h.LinkByName(ifb.AltName)
	if err != nil {
		return append(problems, fmt.Sprintf("ifb %s (%s shaping) is missing", ifb.Name, p.In.Dir))
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		problems = append(problems, fmt.Sprintf("ifb %s is down", ifb.Name))
	}
	problems = append(problems, checkTbf(h, link, p.In)...)
	qdiscs, err := h.QdiscList(dev)
	if err != nil {
		return append(problems, fmt.Sprintf("listing qdiscs of %s: %v", name, err))
	}
	found := false
	for _, q := range qdiscs {
		if _, ok := q.(*netlink.Ingress); ok {
			found = true
		}
	}
	if !found {
		return append(problems, fmt.Sprintf("ingress qdisc on %s (%s shaping) is missing", name, p.In.Dir))
	}
	filters, err := h.FilterList(dev, ingressHandle)
	if err != nil {
		return append(problems, fmt.Sprintf("listing filters of %s: %v", name, err))
	}
	for _, f := range filters {
		if u, ok := f.(*netlink.U32); ok && redirectsTo(u, link.Attrs().Index) {
			return problems
		}
	}
	return append(problems, fmt.Sprintf("the filter redirecting %s's ingress to ifb %s is missing", name, ifb.Name))
}

func redirectsTo(u *netlink.U32, index int) bool {
	for _, a := range u.Actions {
		if m, ok := a.(*netlink.MirredAction); ok && m.Ifindex == index && m.MirredAction == netlink.TCA_EGRESS_REDIR {
			return true
		}
	}
	return false
}

func checkTbf(h netlinksafe.Handle, link netlink.Link, r *Rate) []string {
	name := link.Attrs().Name
	want, err := tbfParams(r.Rate, r.Burst)
	if err != nil {
		return []string{err.Error()}
	}
	qdiscs, err := h.QdiscList(link)
	if err != nil {
		return []string{fmt.Sprintf("listing qdiscs of %s: %v", name, err)}
	}
	for _, q := range qdiscs {
		if q.Attrs().Parent != netlink.HANDLE_ROOT {
			continue
		}
		tbf, ok := q.(*netlink.Tbf)
		if !ok {
			break
		}
		var diff []string
		if tbf.Rate != want.Rate {
			diff = append(diff, fmt.Sprintf("rate %d bit/s, want %d", tbf.Rate*8, want.Rate*8))
		}
		if tbf.Limit != want.Limit {
			diff = append(diff, fmt.Sprintf("limit %d bytes, want %d", tbf.Limit, want.Limit))
		}
		if len(diff) > 0 {
			return []string{fmt.Sprintf("tbf qdisc on %s (%s shaping) has %s", name, r.Dir, strings.Join(diff, ", "))}
		}
		return nil
	}
	return []string{fmt.Sprintf("tbf qdisc on %s (%s shaping) is missing", name, r.Dir)}
}

// Delete deletes the attachment's ifb in the netns of h; none is success. The qdiscs go
// with the shaped device.
func Delete(h netlinksafe.Handle, ifb Ifb) error {
	link, err := h.LinkByName(ifb.AltName)
	if err != nil {
		return nil
	}
	if err := h.LinkDel(link); err != nil && !plugins.IsNotFound(err) {
		return fmt.Errorf("deleting ifb %s: %w", link.Attrs().Name, err)
	}
	return nil
}

// GC deletes the ifbs of network, in the netns of h, that belong to no attachment in
// valid.
func GC(h netlinksafe.Handle, network string, valid []types.GCAttachment) error {
	keep := make(map[string]bool, len(valid))
	for _, v := range valid {
		keep[IfbFor(network, v.ContainerID, v.IfName).AltName] = true
	}
	prefix := networkPrefix(network)
	links, err := h.LinkList()
	if err != nil {
		return fmt.Errorf("listing links: %w", err)
	}
	var errs []error
	for _, l := range links {
		if _, ok := l.(*netlink.Ifb); !ok {
			continue
		}
		for _, a := range l.Attrs().AltNames {
			if strings.HasPrefix(a, prefix) && !keep[a] {
				if err := h.LinkDel(l); err != nil && !plugins.IsNotFound(err) {
					errs = append(errs, fmt.Errorf("deleting stale ifb %s: %w", l.Attrs().Name, err))
				}
				break
			}
		}
	}
	return errors.Join(errs...)
}

// Read returns the limits in force on the host end of a veth attachment (its tbf, and
// the tbf of its ifb), in bits per second and bits; nil when neither is shaped.
func Read(h netlinksafe.Handle, hostVeth netlink.Link, ifb Ifb) *Limits {
	var l Limits
	if t := rootTbfOf(h, hostVeth); t != nil {
		l.IngressRate, l.IngressBurst = t.Rate*8, burstBytes(t)*8
	}
	if link, err := h.LinkByName(ifb.AltName); err == nil {
		if t := rootTbfOf(h, link); t != nil {
			l.EgressRate, l.EgressBurst = t.Rate*8, burstBytes(t)*8
		}
	}
	if l == (Limits{}) {
		return nil
	}
	return &l
}

func rootTbfOf(h netlinksafe.Handle, link netlink.Link) *netlink.Tbf {
	qdiscs, err := h.QdiscList(link)
	if err != nil {
		return nil
	}
	for _, q := range qdiscs {
		if t, ok := q.(*netlink.Tbf); ok && q.Attrs().Parent == netlink.HANDLE_ROOT {
			return t
		}
	}
	return nil
}
