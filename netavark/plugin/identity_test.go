package plugin

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/moornet/moor/ipam/store"
	"github.com/moornet/moor/ipam/store/local"
	"github.com/moornet/moor/netavark/api"
)

// TestAdoptClearsStaleState: a network created again under its name with another ID
// releases the old one's reservations and drops its cached results (not another
// network's); the same ID again touches nothing. A macvlan network without DNS, so that
// no firewall, link or DNS store of this machine is involved.
func TestAdoptClearsStaleState(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{StateDir: filepath.Join(dir, "state"), DNSDir: filepath.Join(dir, "dns"), DNSSocket: filepath.Join(dir, "dns.sock")}
	dataDir := filepath.Join(dir, "ipam")
	network := func(id string) api.Network {
		return api.Network{Name: "lan", ID: id, Driver: "moor-macvlan", NetworkInterface: "eth9",
			Subnets: []api.Subnet{{Subnet: "10.240.0.0/24"}}, IPAMOptions: map[string]string{"driver": "host-local", "dataDir": dataDir}}
	}
	if err := adopt(cfg, network("id-1")); err != nil {
		t.Fatal(err)
	}
	if n := recalled(cfg, "lan"); n == nil || n.ID != "id-1" {
		t.Fatalf("recalled %+v, want id-1", n)
	}
	reserve := func() {
		st, err := local.Open(local.Options{Path: filepath.Join(dataDir, "lan.db")})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		req := store.AllocRequest{Attachment: store.Attachment{Key: store.Key{ContainerID: "lost", IfName: "eth0"}},
			Static: []netip.Prefix{netip.MustParsePrefix("10.240.0.2/24")}}
		if _, err := st.Allocate(context.Background(), req); err != nil {
			t.Fatal(err)
		}
	}
	held := func() int {
		st, err := local.Open(local.Options{Path: filepath.Join(dataDir, "lan.db")})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		atts, err := st.List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return len(atts)
	}
	results := filepath.Join(cfg.cacheDir(), "results")
	if err := os.MkdirAll(results, 0o700); err != nil {
		t.Fatal(err)
	}
	cached := map[string]string{"lan-lost-eth0": `{"networkName":"lan"}`, "lan2-c-eth0": `{"networkName":"lan2"}`}
	for f, body := range cached {
		if err := os.WriteFile(filepath.Join(results, f), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	reserve()

	if err := adopt(cfg, network("id-1")); err != nil || held() != 1 {
		t.Fatalf("the same ID again: %v, %d reservations, want the one kept", err, held())
	}
	if err := adopt(cfg, network("id-2")); err != nil {
		t.Fatal(err)
	}
	if n := held(); n != 0 {
		t.Errorf("%d reservations left by the old network", n)
	}
	if _, err := os.Stat(filepath.Join(results, "lan-lost-eth0")); !os.IsNotExist(err) {
		t.Errorf("the old network's cached result is still there (%v)", err)
	}
	if _, err := os.Stat(filepath.Join(results, "lan2-c-eth0")); err != nil {
		t.Errorf("another network's cached result went: %v", err)
	}
	if n := recalled(cfg, "lan"); n == nil || n.ID != "id-2" {
		t.Errorf("recalled %+v, want id-2", n)
	}
}
