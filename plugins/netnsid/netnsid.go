// Package netnsid identifies network namespaces and tells whether one is still in use. It
// is the one place moor decides which network namespace a process (a plugin, the DNS
// sidecar, the CLI's --netns) belongs to, so that per-namespace state (the DNS sidecar's
// socket, pid file and records) is keyed the same way everywhere.
//
// A namespace is identified by the device and inode of its nsfs file (stat of
// /proc/thread-self/ns/net, or of a path such as /run/netns/x): the pair is what the kernel
// compares, it is the same whichever path names the namespace, and it cannot be taken by
// another namespace while something (a process, a mount, an open file) keeps this one
// alive. A path alone proves nothing: /run/moor/dns.sock may be served from any namespace
// that shares the file system.
//
// InUse answers "does anything but me keep my namespace alive?" without privileges (the DNS
// sidecar drops its capabilities after binding): a bind mount of the namespace visible in
// the caller's mount table (ip netns, runtimes' /run/netns/<id>), or another process whose
// /proc/<pid>/net belongs to the same namespace (procfs gives each namespace's "net/dev"
// entry its own inode, which stat shows to anyone, unlike /proc/<pid>/ns/net, which needs
// ptrace rights). A namespace kept only by an open file descriptor in another process is
// not seen: reading other processes' descriptors needs privileges, and runtimes mount the
// namespaces they keep.
//
// Cookie tells two lives of one identity apart: the kernel reuses a dead namespace's inode
// number for a new namespace, while a namespace's cookie (SO_NETNS_COOKIE) is never reused
// until reboot. State keyed by ID records the cookie of the namespace that wrote it, so
// that a namespace that inherits a dead one's identity does not inherit its state.
//
// StateDir is the one rule for where a namespace's volatile state lives under a run
// directory (the DNS sidecar's paths, the firewall's record of its rules): the machine's
// own namespace uses the run directory itself, any other <run>/netns/<dev>-<ino>/.
//
// What it does not do: enter namespaces (plugins.WithNetns does), or keep any state.
package netnsid

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ID is a network namespace's identity: the device and inode of its nsfs file.
type ID struct {
	Dev, Ino uint64
}

// String is "<dev>-<ino>", usable as a file name; Parse reads it back.
func (id ID) String() string { return fmt.Sprintf("%d-%d", id.Dev, id.Ino) }

// IsZero reports whether id was never set.
func (id ID) IsZero() bool { return id == ID{} }

// Parse reads an ID written by String.
func Parse(s string) (ID, error) {
	dev, ino, ok := strings.Cut(s, "-")
	if ok {
		d, err1 := strconv.ParseUint(dev, 10, 64)
		i, err2 := strconv.ParseUint(ino, 10, 64)
		if err1 == nil && err2 == nil && i != 0 {
			return ID{Dev: d, Ino: i}, nil
		}
	}
	return ID{}, fmt.Errorf("network namespace id %q: want <dev>-<ino>", s)
}

// StateDir returns the directory of the namespace id's volatile state under runDir: runDir
// itself for the machine's own namespace (machine true), <runDir>/netns/<dev>-<ino>
// otherwise, so that the state of different namespaces never meets.
func StateDir(runDir string, id ID, machine bool) string {
	if machine {
		return runDir
	}
	return filepath.Join(runDir, "netns", id.String())
}

// SelfStateDir is StateDir of the calling thread's namespace, with its identity.
func SelfStateDir(runDir string) (string, ID, error) {
	id, err := Self()
	if err != nil {
		return "", id, err
	}
	return StateDir(runDir, id, IsMachine()), id, nil
}

// Paths of procfs the package reads; variables so that tests can point them elsewhere.
var (
	selfPath      = "/proc/thread-self/ns/net"
	procDir       = "/proc"
	mountInfoPath = "/proc/self/mountinfo"
)

// Of returns the identity of the namespace at path (a /proc/<pid>/ns/net file or a bind
// mount of one).
func Of(path string) (ID, error) {
	var st unix.Stat_t
	var fs unix.Statfs_t
	if err := unix.Stat(path, &st); err != nil {
		return ID{}, fmt.Errorf("network namespace %s: %w", path, err)
	}
	if err := unix.Statfs(path, &fs); err != nil {
		return ID{}, fmt.Errorf("network namespace %s: %w", path, err)
	}
	if fs.Type != unix.NSFS_MAGIC || st.Ino == 0 {
		return ID{}, fmt.Errorf("network namespace %s: not a namespace file", path)
	}
	return ID{Dev: st.Dev, Ino: st.Ino}, nil
}

// Self returns the identity of the calling thread's network namespace. Callers that care
// which thread asks (a plugin's main, locked to its OS thread) get the namespace the
// runtime ran them in.
func Self() (ID, error) { return Of(selfPath) }

// ErrNoCookie is wrapped by Cookie's error on kernels without SO_NETNS_COOKIE (before 5.14).
var ErrNoCookie = errors.New("the kernel does not report network namespace cookies")

// Cookie returns the calling thread's network namespace cookie: a number the kernel never
// gives another namespace until reboot.
func Cookie() (uint64, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("network namespace cookie: %w", err)
	}
	defer unix.Close(fd)
	c, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if errors.Is(err, unix.ENOPROTOOPT) {
		return 0, ErrNoCookie
	}
	if err != nil {
		return 0, fmt.Errorf("network namespace cookie: %w", err)
	}
	return c, nil
}

// IsMachine reports whether the calling thread runs in the machine's own network
// namespace: PID 1's (of the caller's PID namespace; a container's own, for a process
// that runs in one). It compares the inodes procfs gives the two namespaces' net/dev
// entries, which needs no privilege (stat of /proc/1/ns/net needs ptrace rights on PID 1,
// which even root may lack in a sandbox). When either cannot be read it answers false:
// the caller then keys its state by namespace, which is never wrong.
func IsMachine() bool {
	var self, machine unix.Stat_t
	if unix.Stat(procDir+"/thread-self/net/dev", &self) != nil || unix.Stat(procDir+"/1/net/dev", &machine) != nil {
		return false
	}
	return self.Ino == machine.Ino && self.Dev == machine.Dev
}

// InUse reports whether the caller's network namespace, whose identity is self, is kept by
// anything but the calling process: a bind mount of it in the caller's mount table, or
// another process in it (see the package doc for what is not seen). A caller that is PID
// 1 (a container's main process, such as a DaemonSet's sidecar on the node's network) is
// always answered true: its namespace lives as long as its container, which ends with it.
// It needs no privileges. An error means it could not tell; callers should then assume it
// is in use.
func InUse(self ID) (bool, error) {
	if os.Getpid() == 1 || IsMachine() { // IsMachine: PID 1 is in it, one stat
		return true, nil
	}
	mounted, err := mountedAt(self)
	if err != nil || mounted {
		return mounted, err
	}
	return otherProcessIn()
}

// mountedAt reports whether the mount table lists an nsfs mount of the namespace. The
// fourth field of a mountinfo line is the mount's root, "net:[<ino>]" for a namespace; the
// fstype follows the " - " separator.
func mountedAt(id ID) (bool, error) {
	f, err := os.Open(mountInfoPath)
	if err != nil {
		return false, err
	}
	defer f.Close()
	return scanMountInfo(f, id)
}

func scanMountInfo(r io.Reader, id ID) (bool, error) {
	root := fmt.Sprintf("net:[%d]", id.Ino)
	rootBytes := []byte(root)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		// A host with many namespaces has a long mount table and the DNS sidecar scans it
		// on every /healthz: lines that cannot be the namespace's are skipped unsplit.
		if !bytes.Contains(sc.Bytes(), rootBytes) {
			continue
		}
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 || fields[3] != root {
			continue
		}
		for i, f := range fields {
			if f == "-" && i+1 < len(fields) && fields[i+1] == "nsfs" {
				return true, nil
			}
		}
	}
	return false, sc.Err()
}

// otherProcessIn reports whether a process other than the caller is in the caller's
// namespace: its /proc/<pid>/net/dev has the caller's inode.
func otherProcessIn() (bool, error) {
	var own unix.Stat_t
	if err := unix.Stat(procDir+"/self/net/dev", &own); err != nil {
		return false, err
	}
	d, err := os.Open(procDir)
	if err != nil {
		return false, err
	}
	defer d.Close()
	self := os.Getpid()
	for {
		names, err := d.Readdirnames(256)
		for _, name := range names {
			pid, perr := strconv.Atoi(name)
			if perr != nil || pid == self {
				continue
			}
			var st unix.Stat_t
			// A process that ended meanwhile, or a kernel thread without one: not ours.
			if unix.Stat(procDir+"/"+name+"/net/dev", &st) == nil && st.Ino == own.Ino && st.Dev == own.Dev {
				return true, nil
			}
		}
		if errors.Is(err, io.EOF) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
	}
}
