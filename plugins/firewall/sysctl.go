package firewall

import (
	"fmt"
	"os"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"
)

// procSys is where sysctls live; a sysctl's Path is relative to it.
const (
	procSys = "/proc/sys"
)

// Sysctl is one kernel setting, Path relative to /proc/sys with slashes (bridge names
// may contain dots), e.g. "net/ipv4/conf/br0/route_localnet".
type Sysctl struct {
	Path  string
	Value string
}

// RequiredSysctls lists the host-side settings the rules of network n rely on, for the
// caller to apply (ApplySysctls) in the host's netns:
//   - net/ipv4/ip_forward=1 when n has an IPv4 subnet, net/ipv6/conf/all/forwarding=1
//     when it has an IPv6 one (note: IPv6 forwarding makes interfaces with accept_ra=1
//     ignore router advertisements; Docker has the same effect);
//   - net/ipv4/conf/<bridge>/route_localnet=1 when n has an IPv4 subnet, so that ports
//     published on 127.0.0.1 (or with no HostIP) answer from the host's loopback. Both
//     backends drop new connections from moor bridges to 127.0.0.0/8, so containers do
//     not gain access to the host's loopback services through it.
//
// Hairpin mode on a container's bridge port (a container reaching its own published
// port) is also the caller's: it is a link attribute, not a sysctl.
func RequiredSysctls(n Network) []Sysctl {
	p, err := planNetwork(n)
	if err != nil {
		return nil
	}
	var out []Sysctl
	if len(p.subnets[fam4]) > 0 {
		out = append(out,
			Sysctl{Path: "net/ipv4/ip_forward", Value: "1"},
			Sysctl{Path: "net/ipv4/conf/" + n.Bridge + "/route_localnet", Value: "1"})
	}
	if len(p.subnets[fam6]) > 0 {
		out = append(out, Sysctl{Path: "net/ipv6/conf/all/forwarding", Value: "1"})
	}
	return out
}

// ApplySysctls writes the settings inside netns (nil: the calling thread's netns; run it
// on a locked thread then). Values already set are not rewritten.
//
// The first directory of the paths (net) is opened once and each file relative to it:
// every network namespace that looked /proc/sys/net up has its own dentry of that name
// under /proc/sys, all in one hash chain, so each lookup of a full path walks one entry
// per such namespace (one per container whose interface got a sysctl), and a bridge ADD
// reads two settings.
func ApplySysctls(netns ns.NetNS, sysctls []Sysctl) error {
	apply := func(ns.NetNS) error {
		dirs := map[string]int{}
		defer func() {
			for _, fd := range dirs {
				_ = unix.Close(fd)
			}
		}()
		for _, s := range sysctls {
			if strings.Contains(s.Path, "..") {
				return invalid("sysctl", s.Path, "must not contain ..")
			}
			first, rest, ok := strings.Cut(s.Path, "/")
			if !ok {
				return invalid("sysctl", s.Path, "must name a file under a directory of /proc/sys")
			}
			dir, ok := dirs[first]
			if !ok {
				fd, err := unix.Open(procSys+"/"+first, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
				if err != nil {
					return fmt.Errorf("firewall: set sysctl %s=%s: %w", s.Path, s.Value, err)
				}
				dirs[first], dir = fd, fd
			}
			if cur, err := readAt(dir, rest); err == nil && strings.TrimSpace(cur) == s.Value {
				continue
			}
			if err := writeAt(dir, rest, s.Value); err != nil {
				return fmt.Errorf("firewall: set sysctl %s=%s: %w", s.Path, s.Value, err)
			}
		}
		return nil
	}
	if netns == nil {
		return apply(nil)
	}
	return netns.Do(apply)
}

// sysctlMax bounds what readAt reads of a sysctl (the ones set here are one number).
const sysctlMax = 64

// readAt reads the file at path relative to the directory dir.
func readAt(dir int, path string) (string, error) {
	fd, err := unix.Openat(dir, path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	buf := make([]byte, sysctlMax)
	n, err := unix.Read(fd, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// writeAt writes value into the file at path relative to the directory dir.
func writeAt(dir int, path, value string) error {
	fd, err := unix.Openat(dir, path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, []byte(value)); err != nil {
		return &os.PathError{Op: "write", Path: path, Err: err}
	}
	return nil
}
