package integration

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/moornet/moor/dns/server"
	"github.com/moornet/moor/plugins/netnsid"
	"github.com/moornet/moor/plugins/plugintest"
)

// Tests of "one DNS sidecar per network namespace": every host namespace below shares one
// MOOR_RUN_DIR (one machine's /run/moor) and, unless a test says otherwise, leaves the
// sidecar paths to moor-dns, which keys them by the namespace's identity.

// sidecarGone bounds the wait for a sidecar to stop by itself: the namespace check
// (server.DefaultNetnsCheck) plus the idle timeout, with room for a loaded machine.
const sidecarGone = 90 * time.Second

// nsHost is one host namespace with its sidecar paths.
type nsHost struct {
	*dnsWorld
	id    netnsid.ID
	paths server.Paths
}

// newNSHost makes a host namespace whose moor-dns uses run as MOOR_RUN_DIR.
func newNSHost(t *testing.T, run string) *nsHost {
	w := &dnsWorld{world: newWorld(t, ""), dir: t.TempDir()}
	id, err := netnsid.Of(w.host.Path())
	if err != nil {
		t.Fatal(err)
	}
	h := &nsHost{dnsWorld: w, id: id, paths: server.PathsFor(run, id, false)}
	t.Cleanup(func() { stopSidecarAt(h.paths.PidFile) })
	return h
}

// network is a bridge network chained with moor-dns on the default (per-namespace) paths.
func (h *nsHost) network(name, bridge, subnet string, idle string) *libcni.NetworkConfigList {
	conf := h.dnsConf(map[string]any{"idleTimeout": idle})
	for _, k := range []string{"storeDir", "controlSocket", "pidFile"} {
		delete(conf, k)
	}
	return conflist(h.t, "1.1.0", name, h.bridgeConf(bridge, subnet, nil), conf)
}

// sidecar returns the pid of the sidecar holding the host's pid file, and checks that it
// answers for the host's namespace.
func (h *nsHost) sidecar() int {
	h.t.Helper()
	pid, ok := server.Running(h.paths.PidFile)
	if !ok {
		h.t.Fatalf("no sidecar holds %s", h.paths.PidFile)
	}
	health, err := server.ReadHealth(h.paths.ControlSocket)
	if err != nil || health.Netns != h.id.String() {
		h.t.Fatalf("sidecar on %s: %+v, %v; want namespace %s", h.paths.ControlSocket, health, err, h.id)
	}
	return pid
}

// stopSidecarAt ends the sidecar holding pidFile, if any.
func stopSidecarAt(pidFile string) {
	if pid, err := server.Stop(pidFile, 5*time.Second); err != nil && pid > 0 {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// waitSidecarGone waits until no process holds pidFile and nothing answers on its socket.
// (The socket file may stay: the sidecar runs unprivileged by then and cannot remove it
// from root's directory; the next sidecar replaces it, as after a SIGKILL.)
func waitSidecarGone(t *testing.T, paths server.Paths, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		_, running := server.Running(paths.PidFile)
		_, sockErr := os.Lstat(paths.ControlSocket)
		if sockErr == nil {
			if c, err := net.Dial("unix", paths.ControlSocket); err == nil {
				_ = c.Close()
			} else {
				sockErr = err // nobody accepts on it
			}
		}
		if !running && sockErr != nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sidecar of %s still there after %s (running %v, socket %v)", paths.PidFile, within, running, sockErr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// The sequence of a test harness that gives each scenario its own host namespace: a
// moor-bridge + moor-dns chain in host A, A deleted without any DEL, then another chain
// (same network name, bridge and subnet) in a new host B. B's ADD gets a sidecar of its
// own (it failed with code 107 when B reused A's sidecar, which cannot bind B's gateway);
// A's sidecar is never used again and stops by itself after its idle timeout although A's
// records were never deleted.
func TestDNSSidecarOfDeletedHostNamespace(t *testing.T) {
	run := t.TempDir()
	t.Setenv(server.RunDirEnv, run)

	a := newNSHost(t, run)
	listA := a.network("scenario", "mdns0", "10.228.0.0/24", "1s")
	webA, _, _ := a.container(listA, "web")
	_, _, ipDB := a.container(listA, "db")
	wantA(t, webA, "10.228.0.1", "db", ipDB)
	pidA := a.sidecar()
	if _, err := os.Stat(filepath.Join(a.paths.StoreDir, "scenario")); err != nil {
		t.Fatalf("A's records are not under its namespace's directory: %v", err)
	}
	if err := plugintest.DeleteNetns(a.host); err != nil {
		t.Fatal(err)
	}

	b := newNSHost(t, run)
	if b.id == a.id {
		t.Fatalf("host B has A's identity %s while A's sidecar keeps A alive", a.id)
	}
	listB := b.network("scenario", "mdns0", "10.228.0.0/24", "1s")
	webB, _, ipB := b.container(listB, "web")
	wantA(t, webB, "10.228.0.1", "web", ipB)
	// A's "db" is not B's: in the domain, so never forwarded.
	if got, rcode, err := lookup(webB, "10.228.0.1", "db.dns.moor", 2*time.Second); err != nil || len(got) != 0 {
		t.Errorf("B resolves A's db: %v rcode %d err %v", got, rcode, err)
	}
	if pidB := b.sidecar(); pidB == pidA {
		t.Fatalf("B uses A's sidecar %d", pidA)
	}

	waitSidecarGone(t, a.paths, sidecarGone)
	// B is untouched by A's end.
	b.sidecar()
	wantA(t, webB, "10.228.0.1", "web", ipB)
}

// Two live host namespaces, each with a network of the same name, bridge and subnet: each
// resolves its own containers, concurrently, and never the other's.
func TestDNSSameNetworkInTwoHostNamespaces(t *testing.T) {
	run := t.TempDir()
	t.Setenv(server.RunDirEnv, run)
	type side struct {
		h      *nsHost
		client ns.NetNS
		ip     string
	}
	var sides []side
	for i := range 2 {
		h := newNSHost(t, run)
		list := h.network("twin", "mdns0", "10.229.0.0/24", "-1s")
		// Different names in each host; the same address (each host has its own IPAM).
		_, _, ip := h.container(list, fmt.Sprintf("only%d", i), "app")
		client, _, _ := h.container(list, "client")
		sides = append(sides, side{h, client, ip})
	}
	if sides[0].h.sidecar() == sides[1].h.sidecar() {
		t.Fatal("both host namespaces use one sidecar")
	}
	var wg sync.WaitGroup
	for i, s := range sides {
		wg.Go(func() {
			for range 50 {
				wantA(t, s.client, "10.229.0.1", "app", s.ip)
				wantA(t, s.client, "10.229.0.1", fmt.Sprintf("only%d", i), s.ip)
				if got, _, _ := lookup(s.client, "10.229.0.1", fmt.Sprintf("only%d.dns.moor", 1-i), time.Second); len(got) != 0 {
					t.Errorf("host %d resolves the other host's container: %v", i, got)
					return
				}
			}
		})
	}
	wg.Wait()
}

// Explicit paths shared by two host namespaces (a config that names controlSocket,
// pidFile and storeDir): while the other namespace lives, its sidecar is not ours and ADD
// fails with 107 naming the fields; once that namespace is deleted, the next ADD stops
// that sidecar and starts one of its own namespace on the same paths. (The shared store
// still holds the deleted namespace's records: sharing storeDir shares records, which is
// why the default paths are per namespace.)
func TestDNSSharedExplicitPathsAcrossNamespaces(t *testing.T) {
	dir := t.TempDir()
	explicit := func(h *nsHost) *libcni.NetworkConfigList {
		conf := h.dnsConf(map[string]any{"idleTimeout": "-1s"})
		conf["storeDir"] = filepath.Join(dir, "records")
		conf["controlSocket"] = filepath.Join(dir, "dns.sock")
		conf["pidFile"] = filepath.Join(dir, "dns.pid")
		return conflist(h.t, "1.1.0", "shared", h.bridgeConf("mdns0", "10.230.0.0/24", nil), conf)
	}
	paths := server.Paths{StoreDir: filepath.Join(dir, "records"), ControlSocket: filepath.Join(dir, "dns.sock"), PidFile: filepath.Join(dir, "dns.pid")}
	t.Cleanup(func() { stopSidecarAt(paths.PidFile) })

	a := newNSHost(t, t.TempDir())
	a.paths = paths
	webA, _, ipA := a.container(explicit(a), "web")
	pidA := a.sidecar()

	b := newNSHost(t, t.TempDir())
	b.paths = paths
	listB := explicit(b)
	ctr := plugintestNetns(t)
	rt := attachment(ctr, "eth0")
	_, err := b.rt.add(listB, rt)
	wantCode(t, err, 107, "controlSocket, pidFile and storeDir must differ between network namespaces")
	// A's sidecar was left alone and still serves A.
	if a.sidecar() != pidA {
		t.Fatal("A's sidecar changed")
	}
	wantA(t, webA, "10.230.0.1", "web", ipA)

	if err := plugintest.DeleteNetns(a.host); err != nil {
		t.Fatal(err)
	}
	webB, _, ipB := b.container(listB, "newb")
	wantA(t, webB, "10.230.0.1", "newb", ipB)
	if pidB := b.sidecar(); pidB == pidA {
		t.Fatalf("B uses the sidecar %d of the deleted namespace", pidA)
	}
}
