package sharedlink_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"

	"github.com/moornet/moor/link/sharedlink"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/plugintest"
)

const prefix = "moor-t-"

// veth describes a shared veth "name" whose users are altnames.
func veth(h netlinksafe.Handle, name, user string, foreignOK bool) sharedlink.Link {
	l := sharedlink.Link{Name: name, Marker: "moor-test", ForeignOK: foreignOK, Create: func() (netlink.Link, error) {
		if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
			return nil, err
		}
		return h.LinkByName(name)
	}}
	sharedlink.AltnameUsers(h, &l, prefix, user)
	return l
}

func users(t *testing.T, h netlinksafe.Handle, name string) []string {
	t.Helper()
	link, err := h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	out := slices.Clone(link.Attrs().AltNames)
	slices.Sort(out)
	return out
}

// TestLastUserDeletes: each user is one mark; the link goes with the last, and a link
// moor did not make is refused or, with ForeignOK, used and never deleted.
func TestLastUserDeletes(t *testing.T) {
	n := plugintest.Netns(t, "moorsl")
	h, nsh, err := plugins.NetlinkAt(n.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { h.Close(); nsh.Close() }()
	m := &sharedlink.Manager{H: h, LockDir: t.TempDir()}

	a, b := prefix+"a", prefix+"b"
	if _, added, err := m.Acquire(veth(h, "sh0", a, false)); err != nil || !added {
		t.Fatalf("first Acquire: added %v, %v", added, err)
	}
	if _, added, err := m.Acquire(veth(h, "sh0", a, false)); err != nil || added {
		t.Fatalf("Acquire of a recorded user: added %v, %v; want not added", added, err)
	}
	if _, added, err := m.Acquire(veth(h, "sh0", b, false)); err != nil || !added {
		t.Fatalf("second user: added %v, %v", added, err)
	}
	if got := users(t, h, "sh0"); !slices.Equal(got, []string{a, b}) {
		t.Fatalf("users %v", got)
	}
	if link, _ := h.LinkByName("sh0"); link.Attrs().Alias != "moor-test" {
		t.Fatalf("alias %q, want the marker", link.Attrs().Alias)
	}
	if deleted, err := m.Release(veth(h, "sh0", a, false), sharedlink.Only(a)); err != nil || deleted {
		t.Fatalf("Release of one of two: deleted %v, %v", deleted, err)
	}
	if got := users(t, h, "sh0"); !slices.Equal(got, []string{b}) {
		t.Fatalf("users after releasing a: %v", got)
	}
	if deleted, err := m.Release(veth(h, "sh0", "", false), sharedlink.Except(map[string]bool{})); err != nil || !deleted {
		t.Fatalf("Release of the last: deleted %v, %v", deleted, err)
	}
	if _, err := h.LinkByName("sh0"); !plugins.IsNotFound(err) {
		t.Fatalf("sh0 survived its last user: %v", err)
	}

	// A link of that name that moor did not make.
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "sh1"}, PeerName: "sh1p"}); err != nil {
		t.Fatal(err)
	}
	_, _, err = m.Acquire(veth(h, "sh1", a, false))
	var e *types.Error
	if !errors.As(plugins.ToCNIError(err), &e) || e.Code != codes.InterfaceConflict {
		t.Fatalf("Acquire of a foreign link: %v, want code %d", err, codes.InterfaceConflict)
	}
	if _, added, err := m.Acquire(veth(h, "sh1", a, true)); err != nil || added {
		t.Fatalf("Acquire of a foreign link with ForeignOK: added %v, %v; want used as it is", added, err)
	}
	if deleted, err := m.Release(veth(h, "sh1", a, true), sharedlink.Only(a)); err != nil || deleted {
		t.Fatalf("Release of a foreign link: deleted %v, %v", deleted, err)
	}
	if got := users(t, h, "sh1"); len(got) != 0 {
		t.Fatalf("a foreign link got marks: %v", got)
	}
}
