package integration

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/dns/records"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/firewall"
)

// concurrentAttachments is how many containers attach to one network at once.
const concurrentAttachments = 16

// 16 containers attach to one brand-new bridge + moor-dns network at the same moment (so
// the bridge, the network's rules and the sidecar are all created under a race), then
// detach at the same moment. Every ADD succeeds with its own address, exactly one sidecar
// runs, every name resolves, and the DELs leave nothing behind.
func TestReliabilityConcurrentAttach(t *testing.T) {
	w := newDNSWorld(t)
	network := "concnet"
	list := w.network(network, "mconc0", "10.234.0.0/24", nil)
	recordsDir := filepath.Join(w.dir, "records")
	type attached struct {
		ctr ns.NetNS
		rt  *libcni.RuntimeConf
		ip  string
	}
	ctrs := make([]ns.NetNS, concurrentAttachments)
	for i := range ctrs {
		ctrs[i] = plugintestNetns(t)
	}
	got := make([]attached, concurrentAttachments)
	errs := make([]error, concurrentAttachments)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range got {
		wg.Go(func() {
			rt := attachment(ctrs[i], "eth0")
			rt.Args = append(rt.Args, [2]string{"K8S_POD_NAME", fmt.Sprintf("conc%d", i)})
			<-start
			res, err := w.rt.add(list, rt)
			if err != nil {
				errs[i] = fmt.Errorf("ADD conc%d: %w", i, err)
				return
			}
			got[i] = attached{ctrs[i], rt, ipOf(res)}
		})
	}
	close(start)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for i, a := range got {
		if j, dup := seen[a.ip]; dup || net.ParseIP(a.ip) == nil {
			t.Errorf("conc%d got address %q, as did conc%d", i, a.ip, j)
		}
		seen[a.ip] = i
	}
	if n := len(w.reservations(network)); n != concurrentAttachments {
		t.Errorf("%d reservations, want %d", n, concurrentAttachments)
	}
	if n := w.bridgePorts("mconc0"); n != concurrentAttachments {
		t.Errorf("%d bridge ports, want %d", n, concurrentAttachments)
	}
	if n := sidecarsOf(t, w.dir); n != 1 {
		t.Errorf("%d sidecars serve this host, want exactly 1", n)
	}
	wantA(t, got[0].ctr, "10.234.0.1", fmt.Sprintf("conc%d", concurrentAttachments-1), got[concurrentAttachments-1].ip)
	wantA(t, got[concurrentAttachments-1].ctr, "10.234.0.1", "conc0", got[0].ip)

	for i := range got {
		wg.Go(func() {
			<-start // already closed: all DELs go at once
			if err := w.rt.del(list, got[i].rt); err != nil {
				errs[i] = fmt.Errorf("DEL conc%d: %w", i, err)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if r, a, rec, p := w.reservations(network), w.fwAttachments(network), recordKeys(t, recordsDir, network), w.bridgePorts("mconc0"); len(r)+len(a)+len(rec)+p != 0 {
		t.Errorf("after the DELs: reservations %v, attachment rules %v, records %v, %d bridge ports", r, a, rec, p)
	}
	for i, c := range ctrs {
		if links := netnsLinks(t, c); strings.Join(links, ",") != "lo" {
			t.Errorf("container %d keeps links %v", i, links)
		}
	}
}

// sidecarsOf counts the moor-dns serve processes whose command line names dir.
func sidecarsOf(t *testing.T, dir string) int {
	t.Helper()
	procs, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range procs {
		cmdline, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(cmdline), "\x00")
		if len(args) > 1 && args[1] == "serve" && strings.Contains(string(cmdline), dir) {
			n++
		}
	}
	return n
}

// lockHold is how long a lock is held against a plugin: several times its timeout.
const lockHold = 300 * time.Millisecond

// holdLock takes an exclusive flock on path (creating it) until the returned func runs.
func holdLock(t *testing.T, path string) func() {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	flags := unix.O_RDONLY | unix.O_CREAT | unix.O_CLOEXEC
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		flags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC // the record store locks directories
	}
	fd, err := unix.Open(path, flags, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release := func() { once.Do(func() { _ = unix.Close(fd) }) }
	t.Cleanup(release)
	return release
}

// A plugin that cannot get a lock in time fails with code 11 (try again later) and
// changes nothing, instead of hanging: the IPAM store's lock through moor-bridge's ADD and
// DEL (with a short ipam.store.lockTimeout), the firewall lock and the DNS record store's
// lock through their packages (moor-bridge has no setting for the firewall lock's 30 s
// timeout, and holding the host-wide /run/moor/firewall.lock would stall every other test
// on the machine; moor-dns waits 10 s for the record lock).
func TestReliabilityLockTimeoutIsTryAgainLater(t *testing.T) {
	w := newWorld(t, firewall.KindNFTables)
	network := "locknet"
	list := w.network(network, "mlock0", "10.235.0.0/24", map[string]any{
		"ipam": map[string]any{"type": "moor-ipam", "subnet": "10.235.0.0/24", "dataDir": w.dataDir, "store": map[string]any{"lockTimeout": "100ms"}},
	})
	ctr := plugintestNetns(t)
	rt := attachment(ctr, "eth0")
	if _, err := w.rt.add(list, rt); err != nil {
		t.Fatal(err)
	}
	links, rules, fwAtt := w.hostLinks(), w.ruleset(), w.fwAttachments(network)
	ctr2 := plugintestNetns(t)
	rt2 := attachment(ctr2, "eth0")

	release := holdLock(t, ipamLocks(w.dataDir, network)[0])
	_, err := w.rt.add(list, rt2)
	wantCode(t, err, codes.TryAgainLater, "lock")
	// (Reading the reservations would wait for the lock too: they are checked below.)
	if l, r, a := w.hostLinks(), w.ruleset(), w.fwAttachments(network); fmt.Sprint(l, a) != fmt.Sprint(links, fwAtt) || r != rules {
		t.Errorf("the ADD that timed out changed links %v -> %v, attachment rules %v -> %v, or the ruleset", links, l, fwAtt, a)
	}
	if links := netnsLinks(t, ctr2); strings.Join(links, ",") != "lo" {
		t.Errorf("the ADD that timed out left %v in its container", links)
	}
	// DEL does what it can (the veth goes) and reports the release it could not do.
	wantCode(t, w.rt.del(list, rt), codes.TryAgainLater, "lock")
	release()
	if r := w.reservations(network); len(r) != 1 || !strings.HasPrefix(r[0], rt.ContainerID) {
		t.Errorf("reservations after the timed-out ADD and DEL: %v, want the first container's", r)
	}
	if err := w.rt.del(list, rt); err != nil {
		t.Fatalf("DEL once the lock is free: %v", err)
	}
	if r := w.reservations(network); len(r) != 0 {
		t.Errorf("reservations left: %v", r)
	}

	// The firewall lock.
	lockFile := filepath.Join(t.TempDir(), "firewall.lock")
	fw, err := firewall.New(firewall.KindNFTables, firewall.Options{NetNS: w.host, LockFile: lockFile, LockTimeout: lockHold / 3})
	if err != nil {
		t.Fatal(err)
	}
	releaseFW := holdLock(t, lockFile)
	_, subnet, _ := net.ParseCIDR("10.236.0.0/24")
	err = fw.EnsureNetwork(firewall.Network{Name: "lockfw", Bridge: "mlockfw0", Subnets: []*net.IPNet{subnet}, IPMasq: true})
	if code := plugins.ToCNIError(err).Code; err == nil || code != codes.TryAgainLater {
		t.Errorf("firewall change while its lock is held: %v (code %d), want code 11", err, code)
	}
	releaseFW()
	if err := fw.EnsureNetwork(firewall.Network{Name: "lockfw", Bridge: "mlockfw0", Subnets: []*net.IPNet{subnet}, IPMasq: true}); err != nil {
		t.Errorf("firewall change once the lock is free: %v", err)
	}
	_ = fw.RemoveNetwork("lockfw")

	// The DNS record store's writer lock (an flock on the network's directory).
	st, err := records.NewLocal(filepath.Join(t.TempDir(), "records"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	gw, sn := net.ParseIP("10.236.1.1"), &net.IPNet{IP: net.ParseIP("10.236.1.0"), Mask: net.CIDRMask(24, 32)}
	if err := st.PutNetwork(context.Background(), records.Network{Name: "lockdns", Gateways: []net.IP{gw}, Subnets: []*net.IPNet{sn}}); err != nil {
		t.Fatal(err)
	}
	releaseDNS := holdLock(t, filepath.Join(st.Root(), "lockdns"))
	ctx, cancel := context.WithTimeout(context.Background(), lockHold/3)
	defer cancel()
	err = st.Put(ctx, records.Record{Network: "lockdns", ContainerID: "c1", IfName: "eth0", Names: []string{"web"}, IPs: []net.IP{net.ParseIP("10.236.1.2")}})
	if code := plugins.ToCNIError(err).Code; err == nil || code != codes.TryAgainLater {
		t.Errorf("record write while its lock is held: %v (code %d), want code 11", err, code)
	}
	releaseDNS()
}
