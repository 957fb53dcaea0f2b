package integration

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/moornet/moor/dns/records"
	"github.com/moornet/moor/dns/server"
	"github.com/moornet/moor/plugins/plugintest"
)

// sidecarRSSBudget is the sidecar's memory budget with memoryRecords records, churn
// included: its peak RSS (VmHWM) must stay below it.
const (
	sidecarRSSBudget = 20 << 20
	memoryRecords    = 10000
	memoryChurn      = 300
)

// The DNS sidecar (`moor-dns serve`, the shipped binary) serving 10,000 records of one
// name each (the shape of scripts/bench-dns.sh, which measures the budget) stays
// under 20 MiB of peak RSS through 300 ADDs and 300 DELs applied as the plugin applies
// them (record written, then POST /reload naming it). With Go's default collector
// percentage the churn took it to about 21.5 MiB (server.gcPercent).
func TestDNSSidecarMemoryUnderChurn(t *testing.T) {
	plugintest.RequireRoot(t)
	host := plugintest.Netns(t, "dnsmem")
	plugintest.InNetns(t, host, func(h netlinksafe.Handle) error {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "dnsmembr"}}
		if err := h.LinkAdd(br); err != nil {
			return err
		}
		addr, _ := netlink.ParseAddr("10.99.0.1/16")
		if err := h.AddrAdd(br, addr); err != nil {
			return err
		}
		if err := h.LinkSetUp(br); err != nil {
			return err
		}
		lo, err := h.LinkByName("lo")
		if err != nil {
			return err
		}
		return h.LinkSetUp(lo)
	})
	dir := t.TempDir()
	storeDir, sock, pidFile := filepath.Join(dir, "store"), filepath.Join(dir, "dns.sock"), filepath.Join(dir, "dns.pid")
	st, err := records.NewLocal(storeDir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_, subnet, _ := net.ParseCIDR("10.99.0.0/16")
	if err := st.PutNetwork(ctx, records.Network{Name: "mem", Domain: "dns.moor", Gateways: []net.IP{net.ParseIP("10.99.0.1")}, Subnets: []*net.IPNet{subnet}}); err != nil {
		t.Fatal(err)
	}
	rec := func(i int) records.Record {
		id := fmt.Sprintf("%012x%052x", 0x5eed000000+i, i)
		return records.Record{Network: "mem", ContainerID: id, IfName: "eth0",
			Names: []string{fmt.Sprintf("ctr-%05d", i)}, IPs: []net.IP{net.IPv4(10, 99, byte(1+i/250), byte(1+i%250))}}
	}
	for i := range memoryRecords {
		if err := st.Put(ctx, rec(i)); err != nil {
			t.Fatal(err)
		}
	}

	cmd := exec.Command("ip", "netns", "exec", filepath.Base(host.Path()), filepath.Join(binDir, "moor-dns"), "serve",
		"--store-dir", storeDir, "--control-socket", sock, "--pid-file", pidFile, "--idle-timeout", "-1s",
		"--firewall-repair=false", "--log-file", filepath.Join(dir, "serve.log"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stopSidecarAt(pidFile)
		_ = cmd.Wait()
	})
	deadline := time.Now().Add(30 * time.Second)
	for !server.Healthy(sock) {
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "serve.log"))
			t.Fatalf("the sidecar did not answer on %s: %s", sock, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if h, err := server.ReadHealth(sock); err != nil || h.Records != memoryRecords {
		t.Fatalf("sidecar health %+v, %v; want %d records", h, err, memoryRecords)
	}

	pid, ok := server.Running(pidFile)
	if !ok {
		t.Fatal("no sidecar holds the pid file")
	}
	rest := vmHWM(t, pid)
	for i := memoryRecords; i < memoryRecords+memoryChurn; i++ {
		r := rec(i)
		if err := st.Put(ctx, r); err != nil {
			t.Fatal(err)
		}
		if err := server.ReloadRecord(sock, r.Key()); err != nil {
			t.Fatal(err)
		}
	}
	for i := memoryRecords; i < memoryRecords+memoryChurn; i++ {
		r := rec(i)
		if err := st.Delete(ctx, r.Network, r.ContainerID, r.IfName); err != nil {
			t.Fatal(err)
		}
		if err := server.ReloadRecord(sock, r.Key()); err != nil {
			t.Fatal(err)
		}
	}
	if h, err := server.ReadHealth(sock); err != nil || h.Records != memoryRecords {
		t.Fatalf("sidecar health after the churn %+v, %v; want %d records", h, err, memoryRecords)
	}
	hwm := vmHWM(t, pid)
	t.Logf("sidecar peak RSS with %d records: %.1f MiB after loading them, %.1f MiB after %d ADDs and DELs", memoryRecords, float64(rest)/(1<<20), float64(hwm)/(1<<20), memoryChurn)
	if hwm >= sidecarRSSBudget {
		t.Fatalf("sidecar peak RSS %.1f MiB, budget %d MiB", float64(hwm)/(1<<20), sidecarRSSBudget>>20)
	}
}

// vmHWM is the peak resident set of process pid, in bytes.
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}
