package plugintest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/plugins/statefs"
)

// NetnsDir is where named namespaces are bound, as `ip netns` does.
const NetnsDir = "/run/netns"

// NewNamedNetns creates a network namespace bound at /run/netns/<name> (so `ip netns`
// sees it) and returns a handle. Remove it with DeleteNetns.
func NewNamedNetns(name string) (ns.NetNS, error) {
	if strings.ContainsAny(name, "/\x00") || name == "" || name == "." || name == ".." {
		return nil, fmt.Errorf("bad netns name %q", name)
	}
	if err := os.MkdirAll(NetnsDir, 0o755); err != nil {
		return nil, err
	}
	path := filepath.Join(NetnsDir, name)
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return nil, fmt.Errorf("creating %s: %w", path, err)
	}
	f.Close()

	err = inFreshNetns(func() error {
		self := fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
		if err := unix.Mount(self, path, "none", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind-mounting netns at %s: %w", path, err)
		}
		return nil
	})
	if err != nil {
		os.Remove(path)
		return nil, err
	}
	h, err := ns.GetNS(path)
	if err != nil {
		_ = unix.Unmount(path, unix.MNT_DETACH)
		os.Remove(path)
		return nil, err
	}
	return h, nil
}

// inFreshNetns runs fn on a locked thread that has entered a new network namespace, then
// takes the thread back to its own namespace; the new one lives on only if fn pinned it
// (a mount). If the thread cannot go back it stays locked: when the goroutine ends, the
// runtime discards the thread instead of reusing it in the wrong netns. (A thread left
// inside would keep the namespace alive, and the main thread, which the runtime never
// discards, is one of those that can run this.)
func inFreshNetns(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid()))
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		err = fn()
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// DeleteNetns closes the handle, unmounts the namespace and removes its file.
func DeleteNetns(h ns.NetNS) error {
	path := h.Path()
	_ = h.Close()
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
		return fmt.Errorf("unmounting %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}

// Netns creates a namespace named <prefix>-<random> for the test and removes it when the
// test ends, also when it fails. Tests that are not run as root are skipped.
//
// The removal takes the namespace's volatile state with it: the plugins keep state per
// host namespace under $MOOR_RUN_DIR/netns/<dev>-<ino> (default /run/moor), and a test
// that ran them without a run dir of its own would otherwise leave a directory there in
// the machine's /run/moor for every namespace it made. The directory belongs to this
// namespace alone (its identity is unique while it exists), so removing it touches
// nothing of another test or of the machine.
func Netns(t testing.TB, prefix string) ns.NetNS {
	t.Helper()
	RequireRoot(t)
	h, err := NewNamedNetns(prefix + "-" + RandomSuffix())
	if err != nil {
		t.Fatalf("creating netns: %v", err)
	}
	state, stateErr := NetnsStateDir(h.Path())
	t.Cleanup(func() {
		if err := DeleteNetns(h); err != nil {
			t.Errorf("removing netns %s: %v", h.Path(), err)
		}
		if stateErr == nil {
			_ = os.RemoveAll(state)
		}
	})
	return h
}

// NetnsStateDir is the directory of the volatile state the plugins keep for the namespace
// at path under the run dir: $MOOR_RUN_DIR/netns/<dev>-<ino>, as netnsid.StateDir names it
// for a namespace that is not the machine's. It is computed here rather than by netnsid
// because netnsid's own tests use this package (an import would be a cycle);
// TestNetnsStateDirIsNetnsids holds the two together.
func NetnsStateDir(path string) (string, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return "", err
	}
	return filepath.Join(statefs.RunDir(nil), "netns", fmt.Sprintf("%d-%d", st.Dev, st.Ino)), nil
}

// RequireRoot skips the test unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
}

// RandomSuffix is 8 hex digits, for names a test owns.
func RandomSuffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// InNetns runs fn on a locked thread inside netns with a route netlink handle of that
// netns, failing the test on an error from fn or from setting up.
func InNetns(t testing.TB, netns ns.NetNS, fn func(h netlinksafe.Handle) error) {
	t.Helper()
	err := netns.Do(func(ns.NetNS) error {
		h, err := netlinksafe.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return err
		}
		defer h.Close()
		return fn(h)
	})
	if err != nil {
		t.Fatal(err)
	}
}
