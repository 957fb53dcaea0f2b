package server

import (
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/moornet/moor/control"
	"github.com/moornet/moor/dns/records"
	"github.com/moornet/moor/plugins/netnsid"
)

// /healthz names the server's namespace; Sidecar accepts it for that namespace only, and
// tells a server of another namespace (or one that does not say) from no server at all.
func TestSidecarIdentity(t *testing.T) {
	e := newEnv(t, []records.Network{netA}, nil)
	self, err := netnsid.Self()
	if err != nil {
		t.Fatal(err)
	}
	h, err := Sidecar(e.sock, self)
	if err != nil || h.Netns != self.String() || h.PID != os.Getpid() || h.Orphaned {
		t.Fatalf("Sidecar(own namespace) = %+v, %v", h, err)
	}
	other := netnsid.ID{Dev: self.Dev, Ino: self.Ino + 1}
	_, err = Sidecar(e.sock, other)
	var fe *ForeignError
	if !errors.As(err, &fe) || fe.Replaceable() || fe.CNICode() != 107 ||
		!strings.Contains(err.Error(), self.String()) || !strings.Contains(err.Error(), other.String()) {
		t.Fatalf("Sidecar(another namespace) = %v, want a *ForeignError naming both, not replaceable", err)
	}
	if _, err := Sidecar(filepath.Join(t.TempDir(), "none.sock"), self); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Sidecar(no server) = %v, want ErrNotRunning", err)
	}

	// A server that does not say which namespace it serves (an older moor-dns) is foreign,
	// and may be replaced.
	old := filepath.Join(t.TempDir(), "old.sock")
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"status": "ok", "networks": 1})
	})
	srv, err := control.Listen(old, mux)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop(0)
	if _, err := Sidecar(old, self); !errors.As(err, &fe) || !fe.Replaceable() {
		t.Fatalf("Sidecar(a server without identity) = %v, want a replaceable *ForeignError", err)
	}
	if !Healthy(old) {
		t.Error("Healthy() is false for a server that answers")
	}
}

// Once its namespace is found deleted, a server goes idle whatever records it holds, even
// with a negative idle timeout (it then waits DefaultIdleTimeout; here a short one), and
// says so in /healthz. (Finding the namespace deleted needs one: see
// integration.TestDNSSidecarOfDeletedHostNamespace.)
func TestOrphanedServerGoesIdleWithRecords(t *testing.T) {
	e := newEnv(t, []records.Network{netA}, func(o *Options) { o.IdleTimeout = 300 * time.Millisecond })
	e.put(rec("a", "c1", []string{"127.10.0.51"}, "kept"))
	if got := answers(e.mustQuery("udp", gwA, clientA, "kept", dns.TypeA)); len(got) != 1 {
		t.Fatalf("record not served: %v", got)
	}
	select {
	case <-e.srv.Idle():
		t.Fatal("idle with a record while the namespace is in use")
	case <-time.After(time.Second):
	}
	e.srv.updateMu.Lock()
	e.srv.orphaned.Store(true)
	e.srv.armIdle(e.srv.snap.Load().records)
	e.srv.updateMu.Unlock()
	select {
	case <-e.srv.Idle():
	case <-time.After(guard):
		t.Fatal("an orphaned server with records never went idle")
	}
	h, err := ReadHealth(e.sock)
	if err != nil || !h.Orphaned {
		t.Fatalf("health of an orphaned server: %+v, %v", h, err)
	}
}
