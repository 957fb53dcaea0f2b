package plugintest

import (
	"fmt"
	"net"
	"os"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"
)

// Feature is a kernel feature that some tests need and some kernels lack. A test that needs
// one says so with RequireKernel, in one place: on a kernel without it the test skips with
// the reason, and scripts/vmtest.sh selects every test that calls RequireKernel to run on
// Debian's stock kernel in a VM, where MOOR_VMTEST=1 makes a missing feature a failure (so
// the lane never passes by skipping).
type Feature string

const (
	Kernel8021Q      Feature = "8021q"                 // 802.1q VLAN links
	KernelBridgeVlan Feature = "bridge VLAN filtering" // CONFIG_BRIDGE_VLAN_FILTERING
	KernelIPVlan     Feature = "ipvlan"
	KernelWireGuard  Feature = "wireguard"
	KernelDummy      Feature = "dummy"
	KernelVRF        Feature = "vrf"
	KernelGeneve     Feature = "geneve"
)

// VMLaneEnv is set to 1 in the VM lane's guest.
const VMLaneEnv = "MOOR_VMTEST"

const kernelProbeParent = "probe0"

// probes create the feature's kernel object in a throwaway netns that holds a veth pair
// kernelProbeParent/probe1 (a parent for the link types that need one). The kernel loads
// the module on demand, as it would for moor.
var probes = map[Feature]struct {
	module string
	link   func(parent int) netlink.Link
}{
	Kernel8021Q: {"8021q", func(p int) netlink.Link {
		return &netlink.Vlan{LinkAttrs: attrs("probe.10", p), VlanId: 10}
	}},
	KernelBridgeVlan: {"bridge", func(int) netlink.Link {
		on := true
		return &netlink.Bridge{LinkAttrs: attrs("probebr", 0), VlanFiltering: &on}
	}},
	KernelIPVlan: {"ipvlan", func(p int) netlink.Link {
		return &netlink.IPVlan{LinkAttrs: attrs("probeipv", p), Mode: netlink.IPVLAN_MODE_L2}
	}},
	KernelWireGuard: {"wireguard", func(int) netlink.Link { return &netlink.Wireguard{LinkAttrs: attrs("probewg", 0)} }},
	KernelDummy:     {"dummy", func(int) netlink.Link { return &netlink.Dummy{LinkAttrs: attrs("probedummy", 0)} }},
	KernelVRF:       {"vrf", func(int) netlink.Link { return &netlink.Vrf{LinkAttrs: attrs("probevrf", 0), Table: 1000} }},
	KernelGeneve: {"geneve", func(int) netlink.Link {
		return &netlink.Geneve{LinkAttrs: attrs("probegnv", 0), ID: 1, Remote: net.IPv4(192, 0, 2, 1)}
	}},
}

func attrs(name string, parent int) netlink.LinkAttrs {
	a := netlink.NewLinkAttrs()
	a.Name = name
	a.ParentIndex = parent
	return a
}

var (
	probeMu     sync.Mutex
	probeResult = map[Feature]error{}
)

// KernelHas reports nil when the running kernel has f, else why not. The probe runs once
// per process, as root, in a network namespace of its own that disappears with it.
func KernelHas(f Feature) error {
	p, ok := probes[f]
	if !ok {
		return fmt.Errorf("unknown kernel feature %q", f)
	}
	probeMu.Lock()
	defer probeMu.Unlock()
	if err, done := probeResult[f]; done {
		return err
	}
	err := inFreshNetns(func() error {
		h, err := netlink.NewHandle()
		if err != nil {
			return err
		}
		defer h.Close()
		veth := &netlink.Veth{LinkAttrs: attrs(kernelProbeParent, 0), PeerName: "probe1"}
		if err := h.LinkAdd(veth); err != nil {
			return fmt.Errorf("veth: %w", err)
		}
		parent, err := h.LinkByName(kernelProbeParent)
		if err != nil {
			return err
		}
		if err := h.LinkAdd(p.link(parent.Attrs().Index)); err != nil {
			return fmt.Errorf("creating a %s link: %w", f, err)
		}
		return nil
	})
	probeResult[f] = err
	return err
}

// RequireKernel skips t unless the kernel has every feature, naming the missing one and
// its module. In the VM lane (MOOR_VMTEST=1, set by scripts/vmtest.sh) it fails t instead:
// the lane's kernel is chosen to have them all. Tests that are not run as root skip.
func RequireKernel(t testing.TB, features ...Feature) {
	t.Helper()
	RequireRoot(t)
	for _, f := range features {
		err := KernelHas(f)
		if err == nil {
			continue
		}
		if os.Getenv(VMLaneEnv) == "1" {
			t.Fatalf("the VM lane's kernel must have %s (module %s), but: %v", f, probes[f].module, err)
		}
		t.Skipf("this kernel lacks %s (module %s): %v; scripts/vmtest.sh runs this test on Debian's stock kernel", f, probes[f].module, err)
	}
}

// RequireKernelWithout skips t when the kernel has f: for tests of the refusal a kernel
// without f gives (code 104 and nothing left behind).
func RequireKernelWithout(t testing.TB, f Feature) {
	t.Helper()
	RequireRoot(t)
	if KernelHas(f) == nil {
		t.Skipf("this kernel has %s: the refusal on kernels without it is not exercised here", f)
	}
}
