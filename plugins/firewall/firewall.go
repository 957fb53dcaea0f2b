// Package firewall gives moor's bridge driver Docker's bridge firewall semantics on any
// CNI runtime, through one interface with two backends: nftables (netlink, no exec) and
// iptables (plugins/firewall/iptexec, which execs iptables with --wait).
//
// What it does, per network: masquerade of traffic from the network's subnets leaving
// the bridge (not to the bridge itself, not to multicast) when IPMasq is set; isolation
// between moor bridges (Docker's DOCKER-ISOLATION-STAGE-1/2: a packet routed from an
// isolating network's bridge to another moor bridge, or from another moor bridge to it,
// is dropped); no routed access (Docker 28's default): a new connection routed into the
// bridge from an interface that is not a moor bridge is dropped unless it was DNATed
// (a published port), so a neighbour that routes the subnet via the host reaches no
// unpublished port (the routed gateway mode lifts this, see modes.go); internal
// networks (nothing is forwarded into or out of the bridge, no masquerade; the host
// itself still reaches the containers); and, per attachment, published ports: DNAT from
// PREROUTING (other hosts, containers) and OUTPUT (the host itself), masquerade of
// hairpin traffic (source and destination in the network's subnet) and of
// loopback-sourced traffic, bound to HostIP alone when given.
//
// Finer options (modes.go), each costing nothing to a network that does not set it:
// gateway modes per family (nat, routed: no masquerade and no routed-in drop, isolated:
// nothing in or out), NoICC (a drop of what the host routes from the bridge back into it
// and a bridge-family drop of frames switched between two of its ports, both unless
// DNATed, so nothing depends on br_netfilter: noicc.go) and SNATAddress (SNAT instead of masquerade). The operator's own chain,
// created when missing and never rewritten or deleted (nftables: table "inet moor-user",
// base chain "forward" at priority filter - 10, before moor's; iptables: MOOR-USER in
// filter, jumped to by the first rule of MOOR-FORWARD), is where a host's policy for
// forwarded traffic and published ports goes; its existence is seen in the chain list
// every ADD reads already.
//
// Published ports never take over the host: a mapping without HostIP is translated on
// every local address except loopback (127.0.0.0/8, ::1); loopback is translated only
// for a mapping whose HostIP is a loopback address (it may sit beside the HostIP-less
// mapping of the same port) or with Attachment.LoopbackToo. Port 53 on Network.Gateways
// is never translated (the DNS sidecar answers there). A host port is refused with
// *PortInUseError (code 103) when another attachment publishes it (an unset or
// unspecified HostIP conflicts with every address of its family, loopback included, as
// for Docker) or when a socket of the host listens on it (see sockets.go). At most
// MaxPortMappings per attachment (code 7).
//
// One backend per host (see mixing.go): a network on the other backend than the one the
// host's moor networks use is refused (*MixedBackendsError, code 7). A network cannot
// move to another bridge while its old bridge has ports (code 7 naming both bridges).
//
// What it does not do: it sets no sysctl and no bridge port flag on its own (see
// RequiredSysctls and ApplySysctls; hairpin mode on the container's bridge port is the
// caller's job), it does not create links, and it never changes a table or chain that is
// not moor's, except that the iptables backend inserts one jump rule into each built-in
// chain it hooks (FORWARD, INPUT, PREROUTING, OUTPUT, POSTROUTING) and keeps the empty
// marker table "inet moor-iptables". IPv6 loopback (::1) cannot be published: the kernel
// has no route_localnet for IPv6.
//
// # Design notes
//
// Every rule carries a label ("moor net=<network> id=<containerID> if=<ifname> rule=...
// sum=<checksum of the rule's content>"; network rules have no id/if, skeleton rules
// carry "base=...") in the nftables rule comment (UserData) or the iptables "-m
// comment". DelAttachment and Attachments find an attachment's rules by that label
// alone, so they work after the container's netns is gone; CheckNetwork and
// CheckAttachment name the rules that are missing or whose content changed; and the
// Ensure/Add paths rewrite only the rules whose label differs from the wanted one.
//
// nftables: one table "inet moor" (family inet: one rule set for IPv4 and IPv6, NAT in
// inet needs Linux 5.2). Base chains prerouting and output (nat, priority dstnat) jump
// to the regular chain "hostports" for local destinations ("fib daddr type local"),
// whose four fixed rules DNAT through the maps ports4, ports4any, ports6 and ports6any
// (one element per published port and family, see nft_ports.go);
// postrouting (nat, srcnat) and forward (filter) dispatch through the verdict maps
// "natmap" and "fwdmap" (key: bridge name, matched on iifname and on oifname) to the
// regular chains "net-<network>-nat" and "net-<network>-fwd"; the set "bridges" holds
// every moor bridge; the sets "dnsgw4"/"dnsgw6" hold the gateways, whose port 53 the
// prerouting and output chains return before the hostports jump; each network's forward
// chain ends with the routed-in drop; input (filter) drops new connections from a moor bridge to
// 127.0.0.0/8 (route_localnet would otherwise let containers reach the host's loopback
// services, CVE-2020-8558). Masquerade uses "iifname" dispatch, so it applies to
// forwarded container traffic, like the reference bridge plugin; host-originated traffic
// sourced from the gateway address is not masqueraded. Each operation is one netlink
// batch (one Flush), so an ADD (AddAttachment) or a DEL (DelAttachment) is one
// transaction: a chain whose rules differ from the wanted ones (by label) is flushed and
// refilled, so it converges after any config change, and the attachment's map elements
// whose label differs are replaced. Chains already right are left alone, because the kernel makes a
// commit that deletes rules or re-adds a chain wait ~10 ms (an RCU grace period); an ADD
// of a new attachment therefore costs ~2 ms and a DEL ~10 ms. Reads are the table's
// chain list, the rules of the chains concerned, the small "fwdmap" and the port maps;
// nothing dumps the whole ruleset. An EnsureNetwork of a network verified in place at the
// ruleset's current generation reads nothing but that generation (nft_gen.go). An ADD
// with port mappings also asks sock_diag for the host's listening sockets (sockets.go). A DROP policy in another table's forward chain (for example Docker's iptables
// FORWARD policy) still drops moor's traffic: nftables base chains cannot override each
// other. Use the iptables backend on such hosts.
//
// iptables: chains MOOR-FORWARD, MOOR-ISOLATION-1/2/3, MOOR-ROUTED-IN (a RETURN per moor
// bridge, then DROP; ISOLATION-1 sends new, non-DNATed connections into a bridge there)
// and MOOR-INPUT in filter,
// MOOR-HOSTPORTS and MOOR-POSTROUTING in nat, for iptables and (when a network or
// attachment has IPv6) ip6tables, with jumps from the built-in chains. POSTROUTING
// cannot match the input bridge, so masquerade leaves out sources that are the host's own
// addresses instead ("addrtype ! --src-type LOCAL"): host traffic from the gateway
// address is not masqueraded here either. Unlike the
// nftables backend it also ACCEPTs the network's traffic in FORWARD, like Docker, so it
// works on hosts whose FORWARD policy is DROP. iptables has no transaction: every
// operation applies rule by rule and deletes what it added when a later step fails; an
// attachment's rules go in one iptables-restore per family from bulkThreshold rules on
// (ipt_bulk.go). Reads list a whole table once per operation ("iptables -t <table>
// -S"), not chain by chain.
//
// All mutating operations of both backends hold an exclusive flock on Options.LockFile
// (one per host), which makes the port conflict check race-free.
//
// Inside that lock they also record what they were asked to build (State, state.go) in
// the State directory of the namespace they work in, so that a Repairer (repair.go) can
// put moor's rules back after a firewall reload from the State alone.
package firewall

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/moornet/moor/plugins/statefs"
)

// Backend kinds accepted by New (the config's firewallBackend).
const (
	KindNFTables = "nftables"
	KindIPTables = "iptables"
	KindDetect   = "" // nftables when the kernel supports it, else iptables
)

// Defaults for Options.
const (
	DefaultLockFile    = statefs.DefaultRunDir + "/" + lockFileName
	lockFileName       = "firewall.lock"
	DefaultLockTimeout = 30 * time.Second
)

// Network is what the firewall needs to know of one bridge network.
type Network struct {
	Name     string       // CNI network name; goes into every rule's label
	Bridge   string       // the Linux bridge's name
	Subnets  []*net.IPNet // the network's subnets (IPv4 and/or IPv6); the bridge holds a gateway in each
	IPMasq   bool         // masquerade traffic from Subnets that leaves the bridge
	Internal bool         // nothing forwarded in or out of the bridge; no masquerade
	Isolate  bool         // drop traffic routed between this bridge and any other moor bridge
	// Gateways are the network's gateway addresses on the bridge. Port 53 on them is
	// never translated to a container (the DNS sidecar answers there).
	Gateways []net.IP
	// Routed opens the network to new connections routed in from outside (any port of
	// any container, for hosts that route to the subnet). False, the default: only
	// published ports (DNAT) let new connections in from outside the network. It is
	// GatewayRouted for the families whose gateway mode is unset.
	Routed bool
	// GatewayMode4 and GatewayMode6 are the gateway modes per address family:
	// GatewayNAT ("" too), GatewayRouted or GatewayIsolated (see modes.go).
	GatewayMode4, GatewayMode6 string
	// NoICC drops traffic between two containers of the network (Docker's
	// enable_icc=false), routed by the host or switched by the bridge, unless it was
	// DNATed (a published port). The switched part is a bridge-family nftables rule on
	// both backends (noicc.go).
	NoICC bool
	// SNATAddress, when set, is the source address traffic of its family leaves with
	// when masqueraded (SNAT), instead of the outgoing interface's address. Needs IPMasq
	// and that family in GatewayNAT mode.
	SNATAddress net.IP
	// SNATAddressIPv6 is IPv6's source address when SNATAddress is an IPv4 one (Docker's
	// host_ipv4 and host_ipv6 together); same conditions. Records written before the
	// field existed read as unset.
	SNATAddressIPv6 net.IP `json:",omitempty"`
}

// PortMapping is one entry of the portMappings capability.
type PortMapping struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol"` // tcp (default when empty), udp or sctp
	HostIP        string `json:"hostIP,omitempty"`
}

// Attachment is one container interface on a network.
type Attachment struct {
	Network     string
	ContainerID string
	IfName      string
	IPs         []net.IP // the container's addresses on this network: the first IPv4 and first IPv6 are DNAT targets
	Ports       []PortMapping
	// LoopbackToo makes every IPv4 mapping without hostIP answer on 127.0.0.1 as well, as
	// if the mapping were listed again with hostIP 127.0.0.1 (Docker's behaviour; the
	// bridge config's publishLoopback). Off, the default: the host's loopback is
	// translated only for mappings that name it.
	LoopbackToo bool
}

// Key returns the identity of the attachment.
func (a Attachment) Key() AttachmentKey {
	return AttachmentKey{Network: a.Network, ContainerID: a.ContainerID, IfName: a.IfName}
}

// AttachmentKey identifies the rules of one attachment.
type AttachmentKey struct {
	Network     string
	ContainerID string
	IfName      string
}

func (k AttachmentKey) String() string { return k.Network + "/" + k.ContainerID + "/" + k.IfName }

// Backend is one firewall implementation. All methods are safe for concurrent use, also
// from several processes (mutations hold Options.LockFile).
type Backend interface {
	// Name returns KindNFTables or KindIPTables.
	Name() string
	// EnsureNetwork creates or updates the network's chains and rules (masquerade,
	// isolation, internal, hairpin and loopback masquerade). Idempotent. AddAttachment
	// does the same work itself, so an ADD needs only AddAttachment; EnsureNetwork is
	// for a network without attachments (e.g. created by the CLI).
	EnsureNetwork(n Network) error
	// RemoveNetwork removes every rule of the network, its attachments' rules included.
	// Idempotent. The last network out also removes moor's table or chains.
	RemoveNetwork(name string) error
	// AddAttachment ensures the network (as EnsureNetwork) and publishes the
	// attachment's ports, replacing whatever rules the same (network, containerID,
	// ifname) had: idempotent, and atomic (nftables: network and attachment in one
	// batch; iptables: what it added is deleted again on failure). A port already
	// published by another attachment fails with *PortInUseError (code 103) before
	// anything changes.
	AddAttachment(n Network, a Attachment) error
	// DelAttachment removes exactly the rules AddAttachment made for the key, found by
	// label (the netns may be gone). Nothing found is success.
	DelAttachment(network, containerID, ifName string) error
	// Attachments lists the attachments of the network that have rules, for GC.
	Attachments(network string) ([]AttachmentKey, error)
	// CheckNetwork reports (*MissingRulesError) every network rule that is missing.
	CheckNetwork(n Network) error
	// CheckAttachment reports (*MissingRulesError) every attachment rule that is missing.
	CheckAttachment(n Network, a Attachment) error
	// Status tells whether the backend can work here (*UnavailableError, code 50, if not).
	Status() error
}

// Options tune a backend.
type Options struct {
	// NetNS is the network namespace to work in; nil means the namespace of the calling
	// thread at each call (plugins lock main to the host's). The caller keeps it open.
	NetNS ns.NetNS
	// LockFile serialises mutations host-wide. Empty: firewall.lock in the run directory
	// ($MOOR_RUN_DIR, else /run/moor: DefaultLockFile). Its directory is created (0700)
	// when missing.
	LockFile string
	// LockTimeout bounds the wait for LockFile (*LockTimeoutError, code 11). Zero:
	// DefaultLockTimeout.
	LockTimeout time.Duration
	// PortReservers are processes of the runtime that called the plugin (see
	// EnvPortReservers): a host socket one of them holds on a port being published is the
	// runtime's own reservation of that port, not a conflict (code 103).
	PortReservers []int
	// StateDir is where the backend records what it is asked to build (see State).
	// Empty: the firewall state directory of the namespace the backend works in, under
	// the directory of LockFile (StateDirIn).
	StateDir string

	repairing bool // a Repairer's backend: runs inside its lock, records nothing
}

// LockFileIn is the host-wide firewall lock of the run directory runDir (see
// statefs.RunDir).
func LockFileIn(runDir string) string { return filepath.Join(runDir, lockFileName) }

func (o Options) withDefaults() Options {
	if o.LockFile == "" {
		o.LockFile = LockFileIn(statefs.RunDir(nil))
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = DefaultLockTimeout
	}
	return o
}

// New returns the backend of the given kind (KindNFTables, KindIPTables, or KindDetect:
// nftables when its Status is nil, else iptables when its Status is nil, else the
// nftables error). Only detection probes the kernel; New never changes anything.
func New(kind string, opts Options) (Backend, error) {
	opts = opts.withDefaults()
	switch kind {
	case KindNFTables:
		return newNFT(opts), nil
	case KindIPTables:
		return newIPT(opts)
	case KindDetect:
		nb := newNFT(opts)
		if nb.probeVerified() {
			return nb, nil // moor's networks are in place at this very generation (nft_gen.go)
		}
		switch nb.inUse() {
		case KindNFTables:
			return nb, nil // moor's table is there: nftables works, no probe needed
		case KindIPTables:
			if ib, err := newIPT(opts); err == nil {
				return ib, nil // the host's networks use iptables: follow them
			}
		}
		nftErr := nb.Status()
		if nftErr == nil {
			return nb, nil
		}
		ib, err := newIPT(opts)
		if err == nil && ib.Status() == nil {
			return ib, nil
		}
		return nil, nftErr
	default:
		return nil, invalid("firewallBackend", kind, `must be "nftables", "iptables" or empty (detect)`)
	}
}

// GC deletes the rules of every attachment of the network that is not in valid
// (CNI GC's cni.dev/valid-attachments) and joins the errors of the deletions.
func GC(b Backend, network string, valid []AttachmentKey) error {
	// The records go first (also those whose rules were gone already, after a flushed
	// firewall), so that a repair running meanwhile does not bring back what is deleted.
	var errs []error
	if o, ok := b.(interface{ options() Options }); ok {
		errs = append(errs, o.options().stateGC(network, valid))
	}
	have, err := b.Attachments(network)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	keep := make(map[AttachmentKey]bool, len(valid))
	for _, k := range valid {
		keep[k] = true
	}
	for _, k := range have {
		if keep[k] {
			continue
		}
		del := func() error { return b.DelAttachment(k.Network, k.ContainerID, k.IfName) }
		if fd, ok := b.(interface{ delAttachmentFull(AttachmentKey) error }); ok {
			// Its record is gone already: the backend must not trust the record to
			// tell what the attachment has (nft_portget.go).
			del = func() error { return fd.delAttachmentFull(k) }
		}
		if err := del(); err != nil {
			errs = append(errs, fmt.Errorf("gc %s: %w", k, err))
		}
	}
	return errors.Join(errs...)
}
