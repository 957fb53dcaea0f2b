package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/dns/records"
	"github.com/moornet/moor/plugins/firewall"
)

// Helpers of the reliability suite (reliability_*_test.go): what an attachment may leave
// behind, whether a lock is still held, and what a running sidecar costs.

// footprint is everything of one network an attachment can leave on a test host: the
// host's links, the firewall ruleset, the network's reservations and attachment rules,
// its DNS records and the links inside one container.
type footprint struct {
	Links         []string
	Rules         string
	Reservations  []string
	FWAttachments []string
	Records       []string
	Container     []string
}

// footprint reads the footprint of network; recordsDir is the DNS record store ("" for a
// network without moor-dns), ctr the container to look into (nil: none).
func (w *world) footprint(network, recordsDir string, ctr ns.NetNS) footprint {
	w.t.Helper()
	f := footprint{
		Links:         w.hostLinks(),
		Rules:         w.ruleset(),
		Reservations:  w.reservations(network),
		FWAttachments: w.fwAttachments(network),
		Records:       recordKeys(w.t, recordsDir, network),
	}
	if ctr != nil {
		f.Container = netnsLinks(w.t, ctr)
	}
	return f
}

// diff describes how g differs from f; "" when it does not.
func (f footprint) diff(g footprint) string {
	var out []string
	list := func(what string, a, b []string) {
		if strings.Join(a, ",") != strings.Join(b, ",") {
			out = append(out, fmt.Sprintf("%s: %v -> %v", what, a, b))
		}
	}
	list("host links", f.Links, g.Links)
	list("reservations", f.Reservations, g.Reservations)
	list("attachment rules", f.FWAttachments, g.FWAttachments)
	list("DNS records", f.Records, g.Records)
	list("container links", f.Container, g.Container)
	if f.Rules != g.Rules {
		out = append(out, fmt.Sprintf("ruleset:\n%s\n--- became ---\n%s", f.Rules, g.Rules))
	}
	return strings.Join(out, "\n")
}

// recordKeys lists the network's DNS records (container/ifname), sorted; none when dir is "".
func recordKeys(t *testing.T, dir, network string) []string {
	t.Helper()
	if dir == "" {
		return nil
	}
	st, err := records.NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	recs, err := st.List(context.Background(), network)
	if err != nil {
		t.Fatalf("listing DNS records: %v", err)
	}
	var keys []string
	for _, r := range recs {
		keys = append(keys, r.ContainerID+"/"+r.IfName)
	}
	sort.Strings(keys)
	return keys
}

// netnsLinks lists the names of the links in a netns, sorted.
func netnsLinks(t *testing.T, netns ns.NetNS) []string {
	t.Helper()
	var names []string
	err := netns.Do(func(ns.NetNS) error {
		links, err := netlinksafe.LinkList()
		for _, l := range links {
			names = append(names, l.Attrs().Name)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(names)
	return names
}

// lockWait bounds the wait for a lock another test's plugin may hold for a moment (the
// firewall lock is host-wide); a lock a dead process left held would never come free.
const lockWait = 10 * time.Second

// locksFree checks that no one holds the flock of any of paths (missing files are free):
// a plugin killed while holding a lock must not leave it held.
func locksFree(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if err := tryLock(p); err != nil {
			t.Errorf("lock %s: %v", p, err)
		}
	}
}

func tryLock(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	deadline := time.Now().Add(lockWait)
	for {
		err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return unix.Flock(fd, unix.LOCK_UN)
		}
		if !errors.Is(err, unix.EWOULDBLOCK) || time.Now().After(deadline) {
			return fmt.Errorf("still held: %w", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ipamLocks are the lock files of a network's IPAM store in dataDir.
func ipamLocks(dataDir, network string) []string {
	return []string{filepath.Join(dataDir, network+".db.lock")}
}

// dnsLocks are the writer lock of the network's record directory.
func dnsLocks(recordsDir, network string) []string {
	return []string{filepath.Join(recordsDir, network)}
}

// noTempFiles checks that no half-written state file (a record store temp file) is left.
func noTempFiles(t *testing.T, dir string) {
	t.Helper()
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".tmp-") {
			t.Errorf("temp file left: %s", p)
		}
		return nil
	})
}

// procStats is what a process costs: resident memory, threads, open descriptors.
type procStats struct {
	RSSKiB  int
	Threads int
	FDs     int
}

func (p procStats) String() string {
	return fmt.Sprintf("RSS %d KiB, %d threads, %d fds", p.RSSKiB, p.Threads, p.FDs)
}

// readProcStats reads /proc/<pid>/status and /proc/<pid>/fd.
func readProcStats(pid int) (procStats, error) {
	var s procStats
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		fields := strings.Fields(val)
		if len(fields) == 0 {
			continue
		}
		switch key {
		case "VmRSS":
			s.RSSKiB, _ = strconv.Atoi(fields[0])
		case "Threads":
			s.Threads, _ = strconv.Atoi(fields[0])
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return s, err
	}
	s.FDs = len(fds)
	return s, nil
}

// fwLock is the host-wide firewall lock the bridge plugin takes.
var fwLock = firewall.DefaultLockFile
