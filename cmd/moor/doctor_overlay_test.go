package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/moornet/moor/overlay/agent"
	"github.com/moornet/moor/overlay/netconf"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/etcdclient/etcdtest"
)

// An overlay network whose agent does not answer: doctor says nothing re-applies its
// masquerade. With the agent running in the host namespace, doctor says it does, and after
// `nft flush ruleset` there it reports the agent's repair of the network.
func TestDoctorReportsOverlayRepair(t *testing.T) {
	w := newWorld(t)
	srv := etcdtest.Start(t, etcdtest.Options{})
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	plugin := fmt.Sprintf(`{"type": "moor-overlay", "subnet": "10.246.0.0/16", "vni": 9, "underlay": "eth0", "ipMasq": true,
  "agentSocket": %q, "stateDir": %q, "store": {"endpoints": [%q], "prefix": "/doctortest"}}`, sock, filepath.Join(dir, "state"), srv.Endpoint)
	if err := os.MkdirAll(w.confDir, 0o755); err != nil {
		t.Fatal(err)
	}
	list := `{"cniVersion": "1.1.0", "name": "ov", "plugins": [` + plugin + `]}`
	if err := os.WriteFile(filepath.Join(w.confDir, "ov.conflist"), []byte(list), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, _, _ := w.moor("doctor"); !strings.Contains(out, "no overlay agent answers on "+sock+": nothing re-applies the masquerade of overlay network(s) ov") {
		t.Errorf("doctor without an agent does not say nothing repairs the overlay:\n%s", out)
	}

	h, nsh, err := plugins.NetlinkAt(w.host.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer nsh.Close()
	defer h.Close()
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "eth0p"}); err != nil {
		t.Fatal(err)
	}
	l, err := h.LinkByName("eth0")
	addr, _ := netlink.ParseAddr("192.168.241.1/24")
	if err == nil {
		err = h.AddrAdd(l, addr)
	}
	if err == nil {
		err = h.LinkSetUp(l)
	}
	if err != nil {
		t.Fatal(err)
	}
	c, err := netconf.Parse([]byte(plugin), "ov", "1.1.0")
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Options{Configs: []*netconf.Conf{c}, HostID: "host-a", Listen: sock, Netns: w.host.Path(),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	repaired := regexp.MustCompile(`overlay firewall repaired [1-9][0-9]* time\(s\) \(someone removed moor-overlay's rules\), last at [0-9T:.+Z-]+`)
	flushed := false
	var out string
	for end := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if !flushed && agent.Healthy(sock, "ov") {
			w.inHost("nft", "flush", "ruleset")
			flushed = true
		}
		out, _, _ = w.moor("doctor")
		if flushed && repaired.MatchString(out) {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("doctor reports no overlay repair within 20s (flushed: %v):\n%s", flushed, out)
		}
	}
	if !strings.Contains(out, "the overlay agent on "+sock+" re-applies the nftables rules of its 1 network(s) after a firewall reload, at once") {
		t.Errorf("doctor output lacks the agent's repair line:\n%s", out)
	}
	if rules := w.inHost("nft", "list", "table", "ip", "moor-overlay"); !strings.Contains(rules, "masquerade") {
		t.Fatalf("masquerade not back:\n%s", rules)
	}
}
