package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/moornet/moor/plugins/codes"
)

// Control API timeouts.
const (
	controlReadTimeout = 5 * time.Second
	controlStopMax     = 2 * time.Second
	reloadTimeout      = 10 * time.Second // client side: a reload reads every record file
	healthTimeout      = time.Second
	socketMode         = 0o600
	runDirMode         = 0o700
	waitRetry          = 20 * time.Millisecond  // pause between WaitAnswer attempts
	waitTryMax         = 200 * time.Millisecond // one WaitAnswer query's timeout
)

type controlServer struct {
	srv  *http.Server
	ln   net.Listener
	path string // the unix socket to remove on stop
}

// Health is the JSON body of GET /healthz.
type Health struct {
	Status       string   `json:"status"` // "ok"
	Networks     int      `json:"networks"`
	Records      int      `json:"records"`
	Listening    []string `json:"listening"`
	ListenErrors []string `json:"listenErrors,omitempty"`
	Chain        []string `json:"chain"`
}

// startControl serves GET /healthz, GET /metrics and POST /reload on the control socket
// (mode 0600) or loopback address.
func startControl(s *Server) (*controlServer, error) {
	c := &controlServer{}
	var err error
	if s.opts.ControlAddr != "" {
		c.ln, err = net.Listen("tcp", s.opts.ControlAddr)
	} else {
		c.path = s.opts.ControlSocket
		if err := os.MkdirAll(filepath.Dir(c.path), runDirMode); err != nil {
			return nil, err
		}
		// A socket left by a dead instance: we hold the pid lock (Run), or the caller
		// chose the path (tests), so it is ours to replace.
		if err := os.Remove(c.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		c.ln, err = net.Listen("unix", c.path)
		if err == nil {
			err = os.Chmod(c.path, socketMode)
		}
	}
	if err != nil {
		if c.ln != nil {
			_ = c.ln.Close()
		}
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		snap := s.snap.Load()
		h := Health{Status: "ok", Networks: len(snap.nets), Records: snap.records, Listening: s.Addrs(), Chain: s.Chain()}
		for _, e := range s.listenErrors() {
			h.ListenErrors = append(h.ListenErrors, e.Error())
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(h)
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_ = s.metrics.writeProm(w, s.snap.Load(), len(s.listenErrors()))
	})
	mux.HandleFunc("POST /reload", func(w http.ResponseWriter, r *http.Request) {
		if err := s.Reload(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		_, _ = io.WriteString(w, "reloaded\n")
	})
	c.srv = &http.Server{Handler: mux, ReadHeaderTimeout: controlReadTimeout}
	go func() { _ = c.srv.Serve(c.ln) }() // returns ErrServerClosed on stop
	return c, nil
}

func (c *controlServer) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), controlStopMax)
	defer cancel()
	_ = c.srv.Shutdown(ctx)
	if c.path != "" {
		_ = os.Remove(c.path)
	}
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

// CNICode maps the error to "DNS server failure".
func (e *ControlError) CNICode() uint { return codes.DNSServerFailure }

// controlClient returns an HTTP client for a control endpoint: a unix socket path, or a
// loopback "ip:port".
func controlClient(endpoint string, timeout time.Duration) *http.Client {
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		if _, err := netip.ParseAddrPort(endpoint); err == nil {
			return d.DialContext(ctx, "tcp", endpoint)
		}
		return d.DialContext(ctx, "unix", endpoint)
	}
	return &http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
}

// controlURL is the URL used for every control call; the dialer ignores its host.
const controlURL = "http://moor-dns"

// Reload asks the server behind endpoint (its control socket path, or loopback ip:port) to
// re-read the record store, and returns once the new records are served.
func Reload(endpoint string) error {
	resp, err := controlClient(endpoint, reloadTimeout).Post(controlURL+"/reload", "text/plain", nil)
	if err != nil {
		return &ControlError{Endpoint: endpoint, Err: err}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return &ControlError{Endpoint: endpoint, Err: fmt.Errorf("reload: %s: %s", resp.Status, strings.TrimSpace(string(body)))}
	}
	return nil
}

// Healthy reports whether a server answers GET /healthz on endpoint (its control socket path,
// or loopback ip:port). The control socket appears once the server has read the store and
// bound its gateways, so a true Healthy means the records are served.
func Healthy(endpoint string) bool {
	resp, err := controlClient(endpoint, healthTimeout).Get(controlURL + "/healthz")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode == http.StatusOK
}

// WaitError reports that a name was not answered in time; it surfaces as DNSServerFailure.
type WaitError struct {
	Addr, Name string
	Last       error
}

func (e *WaitError) Error() string {
	return fmt.Sprintf("dns server %s did not answer %q in time: %v", e.Addr, e.Name, e.Last)
}

// Unwrap exposes the last failure.
func (e *WaitError) Unwrap() error { return e.Last }

// CNICode maps the error to "DNS server failure".
func (e *WaitError) CNICode() uint { return codes.DNSServerFailure }

// WaitAnswer asks addr ("ip" or "ip:port"; port 53 by default) for name's A and AAAA records
// over UDP until one comes back with an address, or timeout passes. The plugin's ADD calls
// it so that the container's first lookup already works. The query's source address must lie
// in the network's subnet: asking from the host to a gateway address uses that address as
// source, which does.
func WaitAnswer(addr, name string, timeout time.Duration) error {
	if _, err := netip.ParseAddr(addr); err == nil {
		addr = net.JoinHostPort(addr, fmt.Sprint(DefaultPort))
	}
	deadline := time.Now().Add(timeout)
	fqdn := dns.Fqdn(name)
	last := errors.New("no attempt made")
	for {
		for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
			left := time.Until(deadline)
			if left <= 0 {
				return &WaitError{Addr: addr, Name: name, Last: last}
			}
			c := dns.Client{Net: "udp", Timeout: min(waitTryMax, left)}
			m := new(dns.Msg)
			m.SetQuestion(fqdn, qt)
			resp, _, err := c.Exchange(m, addr)
			switch {
			case err != nil:
				last = err
			case resp.Rcode != dns.RcodeSuccess:
				last = fmt.Errorf("rcode %s", dns.RcodeToString[resp.Rcode])
			case len(resp.Answer) == 0:
				last = fmt.Errorf("no %s record", dns.TypeToString[qt])
			default:
				return nil
			}
		}
		if time.Until(deadline) <= waitRetry {
			return &WaitError{Addr: addr, Name: name, Last: last}
		}
		time.Sleep(waitRetry)
	}
}
