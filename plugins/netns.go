package plugins

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/plugins/codes"
)

// ErrNetnsGone is wrapped by errors about a network namespace path that no longer exists
// (or is no longer a namespace). DEL treats it as "nothing left to remove"; for any other
// verb it is code 3 (the container is unknown: its namespace is gone), in every plugin.
var ErrNetnsGone error = codes.New(codes.UnknownContainer, "network namespace is gone")

// OpenNetns opens the namespace at path. A missing path, or one that is not a network
// namespace (for example after the runtime unmounted it), wraps ErrNetnsGone.
// The caller must Close the handle.
func OpenNetns(path string) (ns.NetNS, error) {
	h, err := ns.GetNS(path)
	if err == nil {
		return h, nil
	}
	var notExist ns.NSPathNotExistErr
	var notNS ns.NSPathNotNSErr
	if errors.As(err, &notExist) || errors.As(err, &notNS) {
		return nil, fmt.Errorf("%w: %s", ErrNetnsGone, path)
	}
	return nil, fmt.Errorf("opening network namespace %s: %w", path, err)
}

// WithNetns runs fn inside the namespace at path, on a goroutine locked to its own OS
// thread (containernetworking/plugins/pkg/ns Do): the caller's thread never changes
// namespace, and a thread whose switch back failed is never reused. fn gets the caller's
// (host) namespace. Goroutines fn starts do not inherit the namespace.
func WithNetns(path string, fn func(hostNS ns.NetNS) error) error {
	h, err := OpenNetns(path)
	if err != nil {
		return err
	}
	defer h.Close()
	return h.Do(fn)
}

// InNetnsHere runs fn with the calling goroutine's own OS thread switched into the
// namespace target (an open namespace fd, such as the one NetlinkAt returns) and switches
// it back: for a short visit (a few /proc/sys writes) by a driver whose goroutine is
// locked to its thread anyway (the drivers lock their main goroutine in init). It costs
// two setns and one open of the thread's own namespace; WithNetns costs a second
// goroutine handed to another thread, the namespace path opened and checked again, and
// the thread's namespace looked up there. The goroutine stays locked to its thread while
// fn runs, so threads the runtime starts meanwhile come from its template thread, never
// from this one (they do not inherit target). A switch back that fails leaves the thread
// in target for good: it panics, as nothing the process does afterwards could be trusted.
// fn must not start goroutines that expect target.
func InNetnsHere(target netns.NsHandle, fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	self, err := netns.Get()
	if err != nil {
		return fmt.Errorf("reading the thread's network namespace: %w", err)
	}
	defer self.Close()
	if err := netns.Set(target); err != nil {
		return fmt.Errorf("entering network namespace: %w", err)
	}
	defer func() {
		if err := netns.Set(self); err != nil {
			panic(fmt.Sprintf("moor: cannot switch the thread back to its network namespace: %v", err))
		}
	}()
	return fn()
}

// NetlinkAt opens a netlink handle bound to the namespace at path. Calls on it need no
// namespace switch. Its dumps retry when interrupted (netlinksafe). Close both returned
// objects (the handle first).
func NetlinkAt(path string) (netlinksafe.Handle, netns.NsHandle, error) {
	nsh, err := netns.GetFromPath(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return netlinksafe.Handle{}, 0, fmt.Errorf("%w: %s", ErrNetnsGone, path)
		}
		return netlinksafe.Handle{}, 0, fmt.Errorf("opening network namespace %s: %w", path, err)
	}
	h, err := netlinksafe.NewHandleAt(nsh, unix.NETLINK_ROUTE)
	if err != nil {
		nsh.Close()
		return netlinksafe.Handle{}, 0, fmt.Errorf("netlink handle in %s: %w", path, err)
	}
	return h, nsh, nil
}

// IsOwnNetns reports whether path is the network namespace this thread is in (the host's,
// for a plugin called by a runtime).
func IsOwnNetns(path string) (bool, error) {
	var target, own unix.Stat_t
	if err := unix.Stat(path, &target); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, fmt.Errorf("%w: %s", ErrNetnsGone, path)
		}
		return false, codes.Wrap(codes.InvalidEnvironment, fmt.Sprintf("CNI_NETNS %q", path), err)
	}
	self := fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
	if err := unix.Stat(self, &own); err != nil {
		return false, fmt.Errorf("reading own network namespace: %w", err)
	}
	return target.Dev == own.Dev && target.Ino == own.Ino, nil
}

// RequireContainerNetns refuses a CNI_NETNS that is the plugin's own namespace (the
// host's): an interface plugin must never configure the host as if it were a container.
// The message names the plugin.
func (c *Call) RequireContainerNetns() error {
	own, err := IsOwnNetns(c.Netns)
	if err != nil {
		return err
	}
	if own {
		return InvalidField("CNI_NETNS", c.Netns, c.Plugin+" needs the container's own network namespace, not the host's")
	}
	return nil
}

// Handles are the netlink handles of one call: the host's (the calling thread's
// namespace) and the container's, with the container namespace's fd.
type Handles struct {
	Host        netlinksafe.Handle
	Container   netlinksafe.Handle
	ContainerNS netns.NsHandle
}

// OpenHandles opens the host's and the container's netlink handles. Close releases both.
func (c *Call) OpenHandles() (*Handles, error) {
	host, err := netlinksafe.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink handle in the host: %w", err)
	}
	cont, nsh, err := NetlinkAt(c.Netns)
	if err != nil {
		host.Close()
		return nil, err
	}
	return &Handles{Host: host, Container: cont, ContainerNS: nsh}, nil
}

// Close releases the handles.
func (h *Handles) Close() {
	h.Container.Close()
	h.ContainerNS.Close()
	h.Host.Close()
}
