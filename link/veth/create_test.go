package veth

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/link/bridge"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/plugintest"
)

// CreatePair hands back links whose attributes are the kernel's, though it does not look
// the host end up again: index, name, MAC, MTU, master, altname, up; and the container end
// it brought up. A name taken in the container is code 105 and leaves no link behind.
func TestCreatePairLinksAreTheKernels(t *testing.T) {
	inHostAndContainer(t, func(host, cont netlinksafe.Handle, nsh netns.NsHandle) error {
		br, err := addBridge(host, "vtbr0")
		if err != nil {
			return err
		}
		for _, tc := range []struct {
			ifName string
			mtu    int
		}{{"eth0", 1400}, {"eth1", 0}} {
			alt := Bridge.AltName("vtnet", "ctr", tc.ifName)
			p, err := CreatePair(host, cont, Options{ContainerName: tc.ifName, ContainerNS: int(nsh), MTU: tc.mtu, HostAltName: alt, Master: br, HostUp: true, ContainerUp: true})
			if err != nil {
				t.Fatalf("CreatePair %s: %v", tc.ifName, err)
			}
			got := p.Host.Attrs()
			k, err := host.LinkByName(alt)
			if err != nil {
				t.Fatalf("the host end by its altname: %v", err)
			}
			want := k.Attrs()
			if got.Index != want.Index || got.Name != want.Name || got.HardwareAddr.String() != want.HardwareAddr.String() || got.MTU != want.MTU || got.MasterIndex != want.MasterIndex || want.MasterIndex != br.Attrs().Index {
				t.Errorf("%s: host end %d %s %s mtu %d master %d, the kernel's %d %s %s mtu %d master %d", tc.ifName, got.Index, got.Name, got.HardwareAddr, got.MTU, got.MasterIndex, want.Index, want.Name, want.HardwareAddr, want.MTU, want.MasterIndex)
			}
			if want.Flags&unix.IFF_UP == 0 || got.Flags&unix.IFF_UP == 0 {
				t.Errorf("%s: host end up: kernel %v, returned %v", tc.ifName, want.Flags, got.Flags)
			}
			if tc.mtu != 0 && want.MTU != tc.mtu {
				t.Errorf("%s: MTU %d, want %d", tc.ifName, want.MTU, tc.mtu)
			}
			kc, err := cont.LinkByName(tc.ifName)
			if err != nil {
				t.Fatalf("the container end: %v", err)
			}
			if p.Container == nil || p.Container.Attrs().Index != kc.Attrs().Index || p.Container.Attrs().HardwareAddr.String() != kc.Attrs().HardwareAddr.String() || p.Container.Attrs().MTU != kc.Attrs().MTU {
				t.Errorf("%s: container end %+v, the kernel's %+v", tc.ifName, p.Container, kc.Attrs())
			}
			if kc.Attrs().Flags&unix.IFF_UP == 0 {
				t.Errorf("%s: container end not up", tc.ifName)
			}
		}

		before, err := host.LinkList()
		if err != nil {
			return err
		}
		_, err = CreatePair(host, cont, Options{ContainerName: "eth0", ContainerNS: int(nsh), Master: br, HostUp: true, ContainerUp: true})
		var coded *codes.Error
		if !errors.As(err, &coded) || coded.Code != codes.InterfaceConflict {
			t.Errorf("CreatePair with eth0 taken in the container: %v, want code %d", err, codes.InterfaceConflict)
		}
		after, err := host.LinkList()
		if err != nil {
			return err
		}
		if len(after) != len(before) {
			t.Errorf("the refused CreatePair left links: %d before, %d after", len(before), len(after))
		}
		return nil
	})
}

// BeforeContainerUp runs while the container end exists and is still down; its failure
// fails CreatePair and leaves no link on either side.
func TestCreatePairBeforeContainerUp(t *testing.T) {
	inHostAndContainer(t, func(host, cont netlinksafe.Handle, nsh netns.NsHandle) error {
		hostBefore, err := host.LinkList()
		if err != nil {
			return err
		}
		hookErr := errors.New("hook failed")
		for _, fail := range []bool{true, false} {
			ran := false
			_, err := CreatePair(host, cont, Options{ContainerName: "eth0", ContainerNS: int(nsh), HostUp: true, ContainerUp: true,
				BeforeContainerUp: func() error {
					ran = true
					l, err := cont.LinkByName("eth0")
					if err != nil {
						return err
					}
					if l.Attrs().Flags&unix.IFF_UP != 0 {
						t.Error("the container end is up before BeforeContainerUp")
					}
					if fail {
						return hookErr
					}
					return nil
				}})
			if !ran {
				t.Errorf("fail=%v: BeforeContainerUp did not run", fail)
			}
			if fail != errors.Is(err, hookErr) {
				t.Errorf("fail=%v: CreatePair: %v", fail, err)
			}
			if !fail {
				continue
			}
			if hostAfter, err := host.LinkList(); err != nil || len(hostAfter) != len(hostBefore) {
				t.Errorf("the failed CreatePair left host links: %d before, %d after (%v)", len(hostBefore), len(hostAfter), err)
			}
			if _, err := cont.LinkByName("eth0"); err == nil {
				t.Error("the failed CreatePair left eth0 in the container")
			}
		}
		return nil
	})
}

// A bridge that already holds bridge.MaxPorts ports (the kernel's limit, measured here)
// refuses the pair: a *bridge.FullError of code 112 that names the bridge, the network and
// the limit, and no link is left on either side. A port freed, the pair is made.
func TestCreatePairOnFullBridge(t *testing.T) {
	inHostAndContainer(t, func(host, cont netlinksafe.Handle, nsh netns.NsHandle) error {
		br, err := addBridge(host, "vtfull0")
		if err != nil {
			return err
		}
		ports, err := plugintest.FillBridge(host, br, "vf")
		if err != nil {
			return err
		}
		if len(ports) != bridge.MaxPorts {
			t.Fatalf("the kernel took %d ports on one bridge, bridge.MaxPorts says %d", len(ports), bridge.MaxPorts)
		}
		before, err := host.LinkList()
		if err != nil {
			return err
		}
		opts := Options{ContainerName: "eth0", ContainerNS: int(nsh), HostAltName: Bridge.AltName("vtnet", "ctr", "eth0"), Master: br, Network: "vtnet", HostUp: true, ContainerUp: true}
		_, err = CreatePair(host, cont, opts)
		var full *bridge.FullError
		if !errors.As(err, &full) || plugins.ToCNIError(err).Code != codes.BridgeFull {
			t.Fatalf("CreatePair on a full bridge: %v, want a *bridge.FullError of code %d", err, codes.BridgeFull)
		}
		for _, want := range []string{"bridge vtfull0", `network "vtnet"`, fmt.Sprintf("at most %d ports", bridge.MaxPorts), "another network"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("message %q does not say %q", err, want)
			}
		}
		if after, err := host.LinkList(); err != nil || len(after) != len(before) {
			t.Errorf("the refused CreatePair left host links: %d before, %d after (%v)", len(before), len(after), err)
		}
		if _, err := cont.LinkByName("eth0"); err == nil {
			t.Error("the refused CreatePair left eth0 in the container")
		}

		if err := plugins.DeleteLinkByName(host, ports[0]); err != nil {
			return err
		}
		p, err := CreatePair(host, cont, opts)
		if err != nil {
			t.Fatalf("CreatePair after a port was freed: %v", err)
		}
		if p.Host.Attrs().MasterIndex != br.Attrs().Index {
			t.Errorf("host end's master %d, want the bridge %d", p.Host.Attrs().MasterIndex, br.Attrs().Index)
		}
		return nil
	})
}

// inHostAndContainer runs fn in a new host netns with its handle, the handle of a new
// container netns and that netns' fd.
func inHostAndContainer(t *testing.T, fn func(host, cont netlinksafe.Handle, nsh netns.NsHandle) error) {
	t.Helper()
	plugintest.RequireRoot(t)
	hostNS := plugintest.Netns(t, "moor-veth-host")
	contNS := plugintest.Netns(t, "moor-veth-cont")
	plugintest.InNetns(t, hostNS, func(host netlinksafe.Handle) error {
		cont, nsh, err := plugins.NetlinkAt(contNS.Path())
		if err != nil {
			return err
		}
		defer nsh.Close()
		defer cont.Close()
		return fn(host, cont, nsh)
	})
}

// addBridge creates a bridge named name and returns it as the kernel has it.
func addBridge(h netlinksafe.Handle, name string) (netlink.Link, error) {
	if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil {
		return nil, err
	}
	return h.LinkByName(name)
}
