package plugins_test

import (
	"errors"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	cnins "github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/plugintest"
)

// InNetnsHere runs fn on the calling goroutine's thread inside the target namespace: a
// /proc/sys file opened there is the target's (a link only the target has is found), and
// the thread is back in its own namespace afterwards, also when fn fails, from a locked
// goroutine (as the drivers' main) and from an unlocked one.
func TestInNetnsHere(t *testing.T) {
	n, _, nsh, _ := vethNetns(t, "moor-innetns", "innetns0")
	const sysctl = "/proc/sys/net/ipv4/conf/innetns0/arp_notify"
	for _, locked := range []bool{true, false} {
		done := make(chan struct{})
		go func() {
			defer close(done)
			if locked {
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
			}
			before, err := netns.Get()
			if err != nil {
				t.Error(err)
				return
			}
			defer before.Close()
			if _, err := os.Stat(sysctl); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the test's own namespace has %s: %v", sysctl, err)
			}
			err = plugins.InNetnsHere(nsh, func() error {
				return os.WriteFile(sysctl, []byte("1"), 0o644)
			})
			if err != nil {
				t.Errorf("locked %v: %v", locked, err)
			}
			fail := errors.New("fn failed")
			if err := plugins.InNetnsHere(nsh, func() error { return fail }); !errors.Is(err, fail) {
				t.Errorf("locked %v: fn's error came back as %v", locked, err)
			}
			if locked {
				after, err := netns.Get()
				if err != nil {
					t.Error(err)
					return
				}
				defer after.Close()
				if !after.Equal(before) {
					t.Errorf("the thread is in %v after the visit, was in %v", after, before)
				}
			}
		}()
		<-done
	}
	err := plugins.WithNetns(n.Path(), func(cnins.NetNS) error {
		b, err := os.ReadFile(sysctl)
		if err == nil && strings.TrimSpace(string(b)) != "1" {
			t.Errorf("arp_notify in the target = %q, want 1", b)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// SetIPv4Conf sets arp_notify through the handle's socket, in the handle's namespace (the
// /proc/sys file there says so), reports a link that does not exist, and sends nothing
// for a handle without a socket of its own.
func TestSetIPv4Conf(t *testing.T) {
	_, h, nsh, link := vethNetns(t, "moor-devconf", "devconf0")
	read := func() string {
		var v string
		err := plugins.InNetnsHere(nsh, func() error {
			b, err := os.ReadFile("/proc/sys/net/ipv4/conf/devconf0/arp_notify")
			v = strings.TrimSpace(string(b))
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, want := range []uint32{1, 0, 1} {
		sent, err := plugins.SetIPv4Conf(h, link.Attrs().Index, plugins.IPv4ConfARPNotify, want)
		if !sent || err != nil {
			t.Fatalf("SetIPv4Conf(%d): sent %v, %v", want, sent, err)
		}
		if got := read(); got != map[uint32]string{0: "0", 1: "1"}[want] {
			t.Fatalf("arp_notify = %s after setting %d", got, want)
		}
	}
	if sent, err := plugins.SetIPv4Conf(h, 99999, plugins.IPv4ConfARPNotify, 1); !sent || err == nil {
		t.Errorf("a link that does not exist: sent %v, %v", sent, err)
	}
	var pkg netlinksafe.Handle // no sockets of its own
	if sent, err := plugins.SetIPv4Conf(pkg, link.Attrs().Index, plugins.IPv4ConfARPNotify, 1); sent || err != nil {
		t.Errorf("a handle without a socket: sent %v, %v; want nothing sent", sent, err)
	}
}

// vethNetns makes a netns (name prefix) holding a veth pair, name and name+"p", and
// returns it, a handle and fd of it (closed when the test ends) and the link name.
func vethNetns(t *testing.T, prefix, name string) (cnins.NetNS, netlinksafe.Handle, netns.NsHandle, netlink.Link) {
	t.Helper()
	plugintest.RequireRoot(t)
	n := plugintest.Netns(t, prefix)
	h, nsh, err := plugins.NetlinkAt(n.Path())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close(); nsh.Close() })
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
		t.Fatal(err)
	}
	link, err := h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return n, h, nsh, link
}
