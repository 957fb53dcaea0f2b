package plugintest

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// A frame sent with an 802.1q tag over a veth is captured on the other end with its VLAN
// (the receive path moves the tag out of the frame: the capture reads it from auxdata),
// and an untagged frame has VLAN 0.
func TestCaptureSeesVlanTags(t *testing.T) {
	a, b := Netns(t, "moorpt-cap"), Netns(t, "moorpt-cap")
	err := a.Do(func(ns.NetNS) error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "capa0", Flags: net.FlagUp}, PeerName: "capb0", PeerNamespace: netlink.NsFd(int(b.Fd()))}
		return netlink.LinkAdd(veth)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName("capb0")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(l)
	}); err != nil {
		t.Fatal(err)
	}
	c, err := StartCapture(b, "capb0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	marker := []byte("moor-capture-test")
	frame := func(vlan int) []byte {
		f := append([]byte{}, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 1)
		if vlan != 0 {
			f = append(f, 0x81, 0x00, byte(vlan>>8), byte(vlan))
		}
		return append(append(f, 0x88, 0xb5), marker...) // local experimental ethertype
	}
	err = a.Do(func(ns.NetNS) error {
		iface, err := net.InterfaceByName("capa0")
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		for _, vlan := range []int{0, 42} {
			if err := unix.Sendto(fd, frame(vlan), 0, &unix.SockaddrLinklayer{Ifindex: iface.Index, Halen: 6}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, vlan := range []int{0, 42} {
		if _, ok := c.WaitFor(10*time.Second, func(f Frame) bool {
			return f.VLAN == vlan && f.EtherType == 0x88b5 && bytes.HasPrefix(f.Payload, marker)
		}); !ok {
			t.Errorf("no frame with VLAN %d captured; saw %+v", vlan, c.Frames())
		}
	}
}
