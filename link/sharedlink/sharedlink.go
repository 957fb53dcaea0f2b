// Package sharedlink counts the users of a link that several attachments share and that
// goes with its last user: a driver's host shim, or an 802.1q sub-interface moor made as
// a master. Each user leaves a mark on the link (how is the link's business: host routes
// for a shim, altnames for a VLAN master); Release drops marks and deletes the link when
// none is left.
//
// Why marks on the link and not a count elsewhere: the users' own links (macvlans,
// ipvlans) live in container namespaces, invisible from the host, and counting IPAM
// reservations works only for moor-ipam. A mark on the link itself is seen by every
// DEL and GC, survives a crashed plugin, and goes away with the link.
//
// Only a link carrying its Marker alias is counted or deleted: a link of that name made
// by someone else is refused (code 105) or, with ForeignOK, used as it is and never
// deleted. Changes to one link happen under a file lock named after it in the Manager's
// lock directory, so an ADD never joins a link a concurrent DEL is deleting.
//
// What it does not do: decide when a link is needed (the drivers and packages master and
// shim do), or create links itself (Link.Create does).
package sharedlink

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/flock"
	"github.com/moornet/moor/plugins/namehash"
)

// lockTimeout bounds the wait for a shared link's lock.
const lockTimeout = 10 * time.Second

// Hash is n hex digits of the SHA-256 of parts (NUL-separated): the names and marks of
// shared links are derived from network and attachment with it.
func Hash(n int, parts ...string) string {
	sum := namehash.Sum256([]byte(strings.Join(parts, "\x00")))
	return hex.EncodeToString(sum[:])[:n]
}

// Link describes a link that several attachments use and that goes with its last user.
type Link struct {
	Name   string
	Marker string // the alias of a link moor made; only such a link is counted and deleted
	// ForeignOK: a link of this name without the marker is used as it is (a VLAN the
	// admin made) instead of refused with code 105 (a shim's name is moor's).
	ForeignOK bool
	// Adopt: a link of this name without any alias is moor's, half made (a shim's
	// name is moor's; an admin's VLAN has no alias either, so VLANs do not adopt).
	Adopt bool
	// Create makes the link when it is missing (under the lock; Acquire marks it), and
	// undoes its own partial work on failure.
	Create func() (netlink.Link, error)
	// Destroy, optional, frees what the link held (a shim's address) once it is gone;
	// it runs under the lock, also when the link was already gone.
	Destroy func() error
	// User is the calling attachment's mark; AddUser records it on the link.
	User    string
	AddUser func(netlink.Link) error
	// Users lists every recorded user; DropUser forgets one.
	Users    func(netlink.Link) ([]string, error)
	DropUser func(netlink.Link, string) error
}

// Manager changes shared links in the namespace of H, each under a file lock named after
// the link in LockDir, so that an ADD never adds a user to a link a concurrent DEL is
// deleting.
type Manager struct {
	H       netlinksafe.Handle
	LockDir string
}

// lock takes the link's lock, waiting up to lockTimeout (then code 11).
func (s *Manager) lock(name string) (func(), error) {
	path := filepath.Join(s.LockDir, name+".lock")
	release, err := flock.Lock(context.Background(), path, flock.Options{Timeout: lockTimeout})
	if errors.Is(err, flock.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s", plugins.ErrLockTimeout, path)
	}
	return release, err
}

// Acquire returns the link, creating it when missing, and records the calling attachment
// as a user when the link is moor's. added reports whether the user is new: only then
// is its release the caller's undo (a user already recorded belongs to a live attachment).
func (s *Manager) Acquire(l Link) (link netlink.Link, added bool, err error) {
	unlock, err := s.lock(l.Name)
	if err != nil {
		return nil, false, err
	}
	defer unlock()
	link, err = s.H.LinkByName(l.Name)
	created := false
	switch {
	case plugins.IsNotFound(err):
		if link, err = l.Create(); err != nil {
			return nil, false, err
		}
		created = true
	case err != nil:
		return nil, false, fmt.Errorf("looking up %s: %w", l.Name, err)
	}
	if created {
		if err := s.H.LinkSetAlias(link, l.Marker); err != nil {
			return nil, false, errors.Join(fmt.Errorf("marking %s as moor's: %w", l.Name, err), s.remove(l, link))
		}
	} else if owned, err := s.owned(l, link); err != nil {
		return nil, false, err
	} else if !owned {
		if l.ForeignOK {
			return link, false, nil
		}
		return nil, false, codes.New(codes.InterfaceConflict, fmt.Sprintf("link %s exists but was not made by moor (alias %q, want %q)", l.Name, link.Attrs().Alias, l.Marker))
	}
	users, err := l.Users(link)
	if err != nil {
		return nil, false, err
	}
	if slices.Contains(users, l.User) {
		return link, false, nil
	}
	if err := l.AddUser(link); err != nil {
		if created {
			err = errors.Join(err, s.remove(l, link))
		}
		return nil, false, err
	}
	return link, true, nil
}

// Release forgets the users drop selects and deletes the link when no user is left. A
// link without the marker is never touched. deleted reports whether the link is gone now.
func (s *Manager) Release(l Link, drop func(user string) bool) (deleted bool, err error) {
	unlock, err := s.lock(l.Name)
	if err != nil {
		return false, err
	}
	defer unlock()
	link, err := s.H.LinkByName(l.Name)
	if plugins.IsNotFound(err) {
		return true, s.remove(l, nil)
	}
	if err != nil {
		return false, fmt.Errorf("looking up %s: %w", l.Name, err)
	}
	if owned, err := s.owned(l, link); err != nil || !owned {
		return false, err
	}
	users, err := l.Users(link)
	if err != nil {
		return false, err
	}
	remaining := 0
	for _, u := range users {
		if !drop(u) {
			remaining++
			continue
		}
		if err := l.DropUser(link, u); err != nil {
			return false, err
		}
	}
	if remaining > 0 {
		return false, nil
	}
	return true, s.remove(l, link)
}

// owned reports whether link carries the marker. With adopt, a link without any alias
// (one whose creator died before marking it) is marked and owned.
func (s *Manager) owned(l Link, link netlink.Link) (bool, error) {
	switch alias := link.Attrs().Alias; {
	case alias == l.Marker:
		return true, nil
	case alias == "" && l.Adopt:
		if err := s.H.LinkSetAlias(link, l.Marker); err != nil {
			return false, fmt.Errorf("marking %s as moor's: %w", l.Name, err)
		}
		return true, nil
	}
	return false, nil
}

// remove deletes link (when not nil) and runs l.Destroy.
func (s *Manager) remove(l Link, link netlink.Link) error {
	if link != nil {
		if err := s.H.LinkDel(link); err != nil && !plugins.IsNotFound(err) {
			return fmt.Errorf("deleting %s: %w", l.Name, err)
		}
	}
	if l.Destroy != nil {
		return l.Destroy()
	}
	return nil
}

// Only selects exactly one user.
func Only(user string) func(string) bool { return func(alt string) bool { return alt == user } }

// Except selects the users keep does not hold.
func Except(keep map[string]bool) func(string) bool {
	return func(u string) bool { return !keep[u] }
}

// AltnameUsers records users as altnames of the link (user is the caller's); prefix
// tells them from other altnames. The kernel's bound on a link's names (EINVAL) is code
// 104.
func AltnameUsers(h netlinksafe.Handle, l *Link, prefix, user string) {
	l.User = user
	l.AddUser = func(link netlink.Link) error {
		err := h.LinkAddAltName(link, user)
		switch {
		case err == nil, errors.Is(err, unix.EEXIST):
			return nil
		case errors.Is(err, unix.EINVAL):
			return codes.Wrap(codes.KernelFeature, fmt.Sprintf("%s already carries as many users (altnames) as the kernel allows", l.Name), err)
		}
		return fmt.Errorf("recording user %s on %s: %w", user, l.Name, err)
	}
	l.Users = func(link netlink.Link) ([]string, error) {
		var out []string
		for _, alt := range link.Attrs().AltNames {
			if strings.HasPrefix(alt, prefix) {
				out = append(out, alt)
			}
		}
		return out, nil
	}
	l.DropUser = func(link netlink.Link, alt string) error {
		if err := h.LinkDelAltName(link, alt); err != nil && !plugins.IsNotFound(err) {
			return fmt.Errorf("dropping user %s from %s: %w", alt, l.Name, err)
		}
		return nil
	}
}
