package main

import (
	"context"
	"crypto/sha256"
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
)

// Altnames of the users of a moor-made VLAN master: "moor-v-" + 12 hex digits of the
// network's hash + "-" + 24 of the attachment's. The kernel counts every altname at its
// maximum size (128 bytes) against a 64 KiB bound, so a link holds about 490 of them.
const (
	vlanUserPrefix    = "moor-v-"
	networkHashLen    = 12
	attachmentHashLen = 24
)

// lockTimeout bounds the wait for a shared link's lock.
const lockTimeout = 10 * time.Second

func hexHash(n int, parts ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return hex.EncodeToString(sum[:])[:n]
}

// vlanUsersPrefix starts the altname of every user of a VLAN master from network.
func vlanUsersPrefix(network string) string {
	return vlanUserPrefix + hexHash(networkHashLen, network) + "-"
}

// vlanUser is the altname an attachment leaves on a moor-made VLAN master while it uses it.
func vlanUser(network, containerID, ifName string) string {
	return vlanUsersPrefix(network) + hexHash(attachmentHashLen, network, containerID, ifName)
}

// sharedLink describes a link that several attachments use and that goes with its last
// user: the host shim of a network, or an 802.1q sub-interface moor created. How users are
// recorded is the link's business (routes for the shim, altnames for a VLAN master).
type sharedLink struct {
	name   string
	marker string // the alias of a link moor made; only such a link is counted and deleted
	// foreignOK: a link of this name without the marker is used as it is (a VLAN the
	// admin made) instead of refused with code 105 (the shim's name is moor's).
	foreignOK bool
	// adopt: a link of this name without any alias is moor's, half made (the shim's
	// name is moor's; an admin's VLAN has no alias either, so VLANs do not adopt).
	adopt bool
	// create makes the link when it is missing (under the lock; acquire marks it), and
	// undoes its own partial work on failure.
	create func() (netlink.Link, error)
	// destroy, optional, frees what the link held (the shim's address) once it is gone;
	// it runs under the lock, also when the link was already gone.
	destroy func() error
	// user is the calling attachment's mark; addUser records it on the link.
	user    string
	addUser func(netlink.Link) error
	// users lists every recorded user; dropUser forgets one.
	users    func(netlink.Link) ([]string, error)
	dropUser func(netlink.Link, string) error
}

// shared changes shared links in the namespace of h, each under a file lock named after
// the link, so that an ADD never adds a user to a link a concurrent DEL is deleting.
type shared struct {
	h       netlinksafe.Handle
	lockDir string
}

// lock takes the link's lock, waiting up to lockTimeout (then code 11).
func (s *shared) lock(name string) (func(), error) {
	path := filepath.Join(s.lockDir, name+".lock")
	release, err := flock.Lock(context.Background(), path, flock.Options{Timeout: lockTimeout})
	if errors.Is(err, flock.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s", plugins.ErrLockTimeout, path)
	}
	return release, err
}

// acquire returns the link, creating it when missing, and records the calling attachment
// as a user when the link is moor's. added reports whether the user is new: only then
// is its release the caller's undo (a user already recorded belongs to a live attachment).
func (s *shared) acquire(l sharedLink) (link netlink.Link, added bool, err error) {
	unlock, err := s.lock(l.name)
	if err != nil {
		return nil, false, err
	}
	defer unlock()
	link, err = s.h.LinkByName(l.name)
	created := false
	switch {
	case plugins.IsNotFound(err):
		if link, err = l.create(); err != nil {
			return nil, false, err
		}
		created = true
	case err != nil:
		return nil, false, fmt.Errorf("looking up %s: %w", l.name, err)
	}
	if created {
		if err := s.h.LinkSetAlias(link, l.marker); err != nil {
			return nil, false, errors.Join(fmt.Errorf("marking %s as moor's: %w", l.name, err), s.remove(l, link))
		}
	} else if owned, err := s.owned(l, link); err != nil {
		return nil, false, err
	} else if !owned {
		if l.foreignOK {
			return link, false, nil
		}
		return nil, false, codes.New(codes.InterfaceConflict, fmt.Sprintf("link %s exists but was not made by moor (alias %q, want %q)", l.name, link.Attrs().Alias, l.marker))
	}
	users, err := l.users(link)
	if err != nil {
		return nil, false, err
	}
	if slices.Contains(users, l.user) {
		return link, false, nil
	}
	if err := l.addUser(link); err != nil {
		if created {
			err = errors.Join(err, s.remove(l, link))
		}
		return nil, false, err
	}
	return link, true, nil
}

// release forgets the users drop selects and deletes the link when no user is left. A
// link without the marker is never touched. deleted reports whether the link is gone now.
func (s *shared) release(l sharedLink, drop func(user string) bool) (deleted bool, err error) {
	unlock, err := s.lock(l.name)
	if err != nil {
		return false, err
	}
	defer unlock()
	link, err := s.h.LinkByName(l.name)
	if plugins.IsNotFound(err) {
		return true, s.remove(l, nil)
	}
	if err != nil {
		return false, fmt.Errorf("looking up %s: %w", l.name, err)
	}
	if owned, err := s.owned(l, link); err != nil || !owned {
		return false, err
	}
	users, err := l.users(link)
	if err != nil {
		return false, err
	}
	remaining := 0
	for _, u := range users {
		if !drop(u) {
			remaining++
			continue
		}
		if err := l.dropUser(link, u); err != nil {
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
func (s *shared) owned(l sharedLink, link netlink.Link) (bool, error) {
	switch alias := link.Attrs().Alias; {
	case alias == l.marker:
		return true, nil
	case alias == "" && l.adopt:
		if err := s.h.LinkSetAlias(link, l.marker); err != nil {
			return false, fmt.Errorf("marking %s as moor's: %w", l.name, err)
		}
		return true, nil
	}
	return false, nil
}

// remove deletes link (when not nil) and runs l.destroy.
func (s *shared) remove(l sharedLink, link netlink.Link) error {
	if link != nil {
		if err := s.h.LinkDel(link); err != nil && !plugins.IsNotFound(err) {
			return fmt.Errorf("deleting %s: %w", l.name, err)
		}
	}
	if l.destroy != nil {
		return l.destroy()
	}
	return nil
}

// only selects exactly one user.
func only(user string) func(string) bool { return func(alt string) bool { return alt == user } }

// except selects the users keep does not hold.
func except(keep map[string]bool) func(string) bool {
	return func(u string) bool { return !keep[u] }
}

// altnameUsers records users as altnames of the link (user is the caller's); prefix
// tells them from other altnames. The kernel's bound on a link's names (EINVAL) is code
// 104.
func altnameUsers(h netlinksafe.Handle, l *sharedLink, prefix, user string) {
	l.user = user
	l.addUser = func(link netlink.Link) error {
		err := h.LinkAddAltName(link, user)
		switch {
		case err == nil, errors.Is(err, unix.EEXIST):
			return nil
		case errors.Is(err, unix.EINVAL):
			return codes.Wrap(codes.KernelFeature, fmt.Sprintf("%s already carries as many users (altnames) as the kernel allows", l.name), err)
		}
		return fmt.Errorf("recording user %s on %s: %w", user, l.name, err)
	}
	l.users = func(link netlink.Link) ([]string, error) {
		var out []string
		for _, alt := range link.Attrs().AltNames {
			if strings.HasPrefix(alt, prefix) {
				out = append(out, alt)
			}
		}
		return out, nil
	}
	l.dropUser = func(link netlink.Link, alt string) error {
		if err := h.LinkDelAltName(link, alt); err != nil && !plugins.IsNotFound(err) {
			return fmt.Errorf("dropping user %s from %s: %w", alt, l.name, err)
		}
		return nil
	}
}
