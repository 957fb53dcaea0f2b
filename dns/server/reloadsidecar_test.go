package server

import (
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/miekg/dns"

	"github.com/moornet/moor/control"
	"github.com/moornet/moor/dns/records"
	"github.com/moornet/moor/plugins/netnsid"
)

// ReloadSidecar reloads a server of the caller's namespace and returns its health in one
// call; a server of another namespace is reported as foreign and does not reload (its
// answers stay as they were); no server is ErrNotRunning.
func TestReloadSidecar(t *testing.T) {
	e := newEnv(t, []records.Network{netA}, nil)
	// Another *Local on the same directory: the plugin writes from another process, so the
	// server's in-process watch must not see these writes.
	w, err := records.NewLocal(e.store.Root())
	if err != nil {
		t.Fatal(err)
	}
	answersName := func(name string) bool {
		t.Helper()
		return len(answers(e.mustQuery("udp", gwA, clientA, name, dns.TypeA))) > 0
	}

	mine := rec("a", "c1", []string{"127.10.0.61"}, "mine")
	if err := w.Put(t.Context(), mine); err != nil {
		t.Fatal(err)
	}
	h, err := ReloadSidecar(e.sock, e.srv.netns, mine.Key())
	if err != nil {
		t.Fatalf("ReloadSidecar on the caller's server: %v", err)
	}
	if h.Netns != e.srv.netns.String() || h.Records != 1 || len(h.Listening) == 0 {
		t.Fatalf("health after the reload: %+v", h)
	}
	if !answersName("mine") {
		t.Fatal("the reloaded record does not answer")
	}

	other := e.srv.netns
	other.Ino++
	foreignRec := rec("a", "c2", []string{"127.10.0.62"}, "foreign")
	if err := w.Put(t.Context(), foreignRec); err != nil {
		t.Fatal(err)
	}
	_, err = ReloadSidecar(e.sock, other, foreignRec.Key())
	var foreign *ForeignError
	if !errors.As(err, &foreign) || foreign.Health.Netns != e.srv.netns.String() {
		t.Fatalf("ReloadSidecar for another namespace: %v, want a *ForeignError naming %s", err, e.srv.netns)
	}
	if answersName("foreign") {
		t.Fatal("a server asked by another namespace reloaded")
	}

	if _, err := ReloadSidecar(filepath.Join(t.TempDir(), "none.sock"), e.srv.netns, mine.Key()); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("ReloadSidecar without a server: %v, want ErrNotRunning", err)
	}

	// A bad key is the server's 400, reported as the reload's failure, not as no server.
	_, err = ReloadSidecar(e.sock, e.srv.netns, records.RecordKey{Network: "a", ContainerID: "../x", IfName: "eth0"})
	var status *control.StatusError
	if !errors.As(err, &status) || status.Code != http.StatusBadRequest || errors.Is(err, ErrNotRunning) {
		t.Fatalf("ReloadSidecar with an invalid key: %v, want the server's 400", err)
	}
}

// A server of an older moor ignores the netns parameter, reloads and answers without its
// health: ReloadSidecar then reads /healthz and judges the namespace from it.
func TestReloadSidecarOlderServer(t *testing.T) {
	self, err := netnsid.Self()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		netns   string
		foreign bool
	}{
		{"same namespace", self.String(), false},
		{"another namespace", "1-2", true},
		{"namespace not said", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var reloads atomic.Int32
			mux := http.NewServeMux()
			mux.HandleFunc("POST /reload", func(w http.ResponseWriter, _ *http.Request) {
				reloads.Add(1)
				_, _ = io.WriteString(w, "reloaded\n")
			})
			mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
				_, _ = io.WriteString(w, `{"status":"ok","netns":"`+tc.netns+`","pid":1}`)
			})
			srv, err := control.Listen(filepath.Join(t.TempDir(), "old.sock"), mux)
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Stop(0)
			h, err := ReloadSidecar(srv.Addr(), self, records.RecordKey{Network: "a", ContainerID: "c1", IfName: "eth0"})
			var foreign *ForeignError
			if tc.foreign != errors.As(err, &foreign) || !tc.foreign && (err != nil || h.Netns != self.String()) {
				t.Fatalf("ReloadSidecar: %+v, %v (foreign wanted: %v)", h, err, tc.foreign)
			}
			if n := reloads.Load(); n != 1 {
				t.Fatalf("%d reloads, want 1", n)
			}
		})
	}
}
