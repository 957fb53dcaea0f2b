// Package hostns is the network namespace the CLI treats as "the host": the process's own
// by default, or the one named by the global --netns flag (tests point it at a netns they
// made, so that every kernel-facing step stays out of the machine's own stack).
//
// Work that must happen in that namespace goes through Do, which runs it on a locked OS
// thread switched into the namespace (containernetworking/plugins/pkg/ns Do): netlink
// calls, sysctl reads, and processes started from inside Do (libcni's plugin execs) all
// inherit it. Netlink alone can use Netlink, a handle bound to the namespace.
//
// What it does not do: it never changes the namespace of the calling thread, and it
// switches no mount namespace: paths (/run/netns, /var/lib/moor) are the caller's.
package hostns

import (
	"fmt"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/plugins"
)

// Host is the host namespace of one CLI run. The zero value is the process's own.
type Host struct {
	path string
	ns   ns.NetNS
}

// Open returns the host at path; an empty path is the process's own namespace.
func Open(path string) (*Host, error) {
	if path == "" {
		return &Host{}, nil
	}
	h, err := plugins.OpenNetns(path)
	if err != nil {
		return nil, fmt.Errorf("--netns: %w", err)
	}
	return &Host{path: path, ns: h}, nil
}

// Close releases the namespace handle.
func (h *Host) Close() error {
	if h.ns == nil {
		return nil
	}
	return h.ns.Close()
}

// NS is the namespace handle, nil for the process's own (firewall.Options.NetNS takes it).
func (h *Host) NS() ns.NetNS { return h.ns }

// Path is the namespace's path, "" for the process's own.
func (h *Host) Path() string { return h.path }

// Do runs fn in the host namespace.
func (h *Host) Do(fn func() error) error {
	if h.ns == nil {
		return fn()
	}
	return h.ns.Do(func(ns.NetNS) error { return fn() })
}

// Netlink opens a netlink handle in the host namespace; close it after use.
func (h *Host) Netlink() (netlinksafe.Handle, error) {
	if h.ns == nil {
		return netlinksafe.NewHandle(unix.NETLINK_ROUTE)
	}
	nl, nsh, err := plugins.NetlinkAt(h.path)
	if err != nil {
		return netlinksafe.Handle{}, err
	}
	// The handle's sockets keep the namespace alive; the namespace fd is not needed.
	_ = nsh.Close()
	return nl, nil
}

// Routes lists the routes of the main table, both families.
func (h *Host) Routes() ([]netlink.Route, error) {
	nl, err := h.Netlink()
	if err != nil {
		return nil, err
	}
	defer nl.Close()
	filter := &netlink.Route{Table: unix.RT_TABLE_MAIN}
	routes, err := nl.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("listing the host's routes: %w", err)
	}
	return routes, nil
}
