package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/moornet/moor/control"
	"github.com/moornet/moor/dns/records"
	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/firewall"
	"github.com/moornet/moor/plugins/netnsid"
)

// Control API timeouts.
const (
	controlStopMax = 2 * time.Second
	reloadTimeout  = 10 * time.Second // client side: a reload reads every record file
	healthTimeout  = time.Second
	socketMode     = control.SocketMode
	runDirMode     = control.DirMode
)

// Health is the JSON body of GET /healthz.
type Health struct {
	Status       string   `json:"status"` // "ok"
	Networks     int      `json:"networks"`
	Records      int      `json:"records"`
	Listening    []string `json:"listening"`
	ListenErrors []string `json:"listenErrors,omitempty"`
	Chain        []string `json:"chain"`
	// Netns is the identity ("<dev>-<ino>", see netnsid) of the network namespace the
	// server runs in: a client in another namespace must not use it.
	Netns string `json:"netns"`
	// Orphaned is set once nothing but the server keeps its namespace alive (the namespace
	// was deleted); such a server only waits for its idle timeout to end.
	Orphaned bool `json:"orphaned,omitempty"`
	PID      int  `json:"pid"`
	// FirewallRepair is what the server's firewall Repairer did (nil: none runs).
	FirewallRepair *firewall.RepairStats `json:"firewallRepair,omitempty"`
	// FirewallRestart is set when the repair needs privileges this server dropped at
	// start (see Server.needsRestart): the plugin replaces such a server.
	FirewallRestart bool `json:"firewallRestart,omitempty"`
}

// startControl serves GET /healthz, GET /metrics and POST /reload on the control socket
// (mode 0600) or loopback address. POST /reload re-reads the whole store; with
// ?network=N only that network; with ?network=N&container=ID&ifname=IF it applies that
// one record (Server.applyRecord).
func startControl(s *Server) (*control.Server, error) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s.health())
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_ = s.metrics.writeProm(w, s.snap.Load(), len(s.listenErrors()))
	})
	mux.HandleFunc("POST /reload", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		network, containerID, ifName := q.Get("network"), q.Get("container"), q.Get("ifname")
		// With netns (ReloadSidecar), the answer is this server's health, and a server of
		// another namespace does not reload.
		_, withHealth := q["netns"]
		if withHealth && q.Get("netns") != s.netns.String() {
			writeReloadAnswer(w, reloadAnswer{Health: s.health()})
			return
		}
		var err error
		switch {
		case network == "" && containerID == "" && ifName == "":
			err = s.Reload(r.Context())
		case containerID == "" && ifName == "":
			if err = records.ValidNetworkName(network); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			err = s.update(r.Context(), []string{network})
		default:
			if err = records.ValidKey(network, containerID, ifName); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			err = s.applyRecord(r.Context(), network, containerID, ifName)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if withHealth {
			writeReloadAnswer(w, reloadAnswer{Health: s.health(), Reloaded: true})
			return
		}
		_, _ = io.WriteString(w, "reloaded\n")
	})
	endpoint := s.opts.ControlSocket
	if s.opts.ControlAddr != "" {
		endpoint = s.opts.ControlAddr
	}
	return control.Listen(endpoint, s.gate(mux))
}

// health is the server's answer to GET /healthz.
func (s *Server) health() Health {
	snap := s.snap.Load()
	h := Health{Status: "ok", Networks: len(snap.nets), Records: snap.records, Listening: s.Addrs(), Chain: s.Chain(),
		Netns: s.netns.String(), Orphaned: s.opts.NetnsCheck > 0 && s.checkNetns(), PID: os.Getpid(),
		FirewallRepair: s.repairStats(), FirewallRestart: s.needsRestart()}
	for _, e := range s.listenErrors() {
		h.ListenErrors = append(h.ListenErrors, e.Error())
	}
	return h
}

func writeReloadAnswer(w http.ResponseWriter, a reloadAnswer) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(a)
}

// ControlError reports a failed call to a server's control API; it surfaces as
// DNSServerFailure (107).
type ControlError struct {
	Endpoint string
	Err      error
}

func (e *ControlError) Error() string {
	return fmt.Sprintf("dns server control %s: %v", e.Endpoint, e.Err)
}

// Unwrap exposes the cause.
func (e *ControlError) Unwrap() error { return e.Err }

// CNICode: a control call that got no answer in time is code 11 (try again later), any
// other failure "DNS server failure" (107).
func (e *ControlError) CNICode() uint { return timeoutOr(e.Err, codes.DNSServerFailure) }

// timeoutOr is 11 when err is a timeout (no answer in time), else code.
func timeoutOr(err error, code uint) uint {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded) {
		return codes.TryAgainLater
	}
	return code
}

// call sends method to path on endpoint (a control socket path, or loopback ip:port).
func call(endpoint, method, path string, timeout time.Duration) ([]byte, error) {
	c, err := control.NewClient(endpoint, timeout)
	if err == nil {
		var body []byte
		if body, err = c.Do(method, path); err == nil {
			return body, nil
		}
	}
	return nil, &ControlError{Endpoint: endpoint, Err: fmt.Errorf("%s %s: %w", method, path, err)}
}

// Reload asks the server behind endpoint (its control socket path, or loopback ip:port) to
// re-read the record store, and returns once the new records are served.
func Reload(endpoint string) error {
	_, err := call(endpoint, http.MethodPost, "/reload", reloadTimeout)
	return err
}

// ReloadRecord tells the server behind endpoint that the record key names was written or
// deleted, and returns once the server serves the store's state of it. The server reads
// that record alone when it can (see withRecord), else the record's network. A server of
// an older moor ignores the parameters and re-reads the whole store.
func ReloadRecord(endpoint string, key records.RecordKey) error {
	q := url.Values{"network": {key.Network}, "container": {key.ContainerID}, "ifname": {key.IfName}}
	_, err := call(endpoint, http.MethodPost, "/reload?"+q.Encode(), reloadTimeout)
	return err
}

// Healthy reports whether a server answers GET /healthz on endpoint (its control socket path,
// or loopback ip:port), whichever namespace it serves; a plugin uses Sidecar instead. The
// control socket appears once the server has read the store and bound its gateways, so a
// true Healthy means the records are served.
func Healthy(endpoint string) bool {
	_, err := ReadHealth(endpoint)
	return err == nil
}

// ReadHealth returns the answer of GET /healthz on endpoint.
func ReadHealth(endpoint string) (Health, error) {
	var h Health
	body, err := call(endpoint, http.MethodGet, "/healthz", healthTimeout)
	if err != nil {
		return h, err
	}
	if err := json.Unmarshal(body, &h); err != nil {
		return h, &ControlError{Endpoint: endpoint, Err: fmt.Errorf("GET /healthz: %w", err)}
	}
	return h, nil
}

// ForeignError reports that the server answering on a control endpoint serves another
// network namespace than the caller's, or does not say which (a server of an older moor).
// Such a server is never used: its gateways are not the caller's.
type ForeignError struct {
	Endpoint string
	Want     netnsid.ID
	Health   Health // the foreign server's answer
}

func (e *ForeignError) Error() string {
	got := e.Health.Netns
	if got == "" {
		got = "an unknown namespace"
	}
	state := ""
	if e.Health.Orphaned {
		state = ", which was deleted"
	}
	return fmt.Sprintf("the DNS sidecar on %s (pid %d) serves network namespace %s%s, not this one (%s)", e.Endpoint, e.Health.PID, got, state, e.Want)
}

// CNICode maps the error to "DNS server failure".
func (e *ForeignError) CNICode() uint { return codes.DNSServerFailure }

// Replaceable reports whether the foreign server may be stopped so that the caller's own
// namespace gets a server at the endpoint: its namespace was deleted, or it does not say
// which namespace it serves. A server of another live namespace is not replaceable.
func (e *ForeignError) Replaceable() bool { return e.Health.Orphaned || e.Health.Netns == "" }

// ErrNotRunning is returned by Sidecar when no server answers on the endpoint.
var ErrNotRunning = errors.New("no DNS sidecar answers")

// Sidecar returns the health of the server on endpoint when it serves the namespace want;
// ErrNotRunning when none answers, *ForeignError when one of another namespace does.
func Sidecar(endpoint string, want netnsid.ID) (Health, error) {
	h, err := ReadHealth(endpoint)
	if err != nil {
		return h, fmt.Errorf("%w on %s: %w", ErrNotRunning, endpoint, err)
	}
	if h.Netns != want.String() {
		return h, &ForeignError{Endpoint: endpoint, Want: want, Health: h}
	}
	return h, nil
}
