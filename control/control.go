// Package control is the local HTTP control API of moor's daemons (the DNS sidecar,
// `moor-dns serve`, and the overlay agent, `moor-overlay agent`): one endpoint syntax, one
// server that listens on it, one client that talks to it. The daemons register their own
// handlers (health, metrics, reload, status, leave) and keep their own error types.
//
// Endpoint syntax: a unix socket path ("/run/moor/dns.sock", optionally written
// "unix:/run/moor/dns.sock") or a loopback TCP address ("127.0.0.1:9153", "[::1]:9153").
// Anything that parses as ip:port is TCP; a non-loopback address is refused on both sides,
// because the API changes a daemon's state and has no authentication: a unix socket is
// made mode 0600 in a directory made 0700 (root's only), and loopback is the TCP fallback
// for debugging.
//
// A socket file left by a daemon that died is replaced; one on which a server still
// accepts connections is not (ErrInUse): two daemons never share an endpoint, and the
// second learns it at start.
//
// What it does not do: authenticate, serve anything but loopback, or know the daemons'
// endpoints (it imports no moor package).
package control

import (
	"context"
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

	"github.com/moornet/moor/plugins/statefs"
)

// Modes of the socket and of the directories Listen creates.
const (
	SocketMode = 0o600
	DirMode    = 0o700
)

const (
	unixPrefix        = "unix:"
	readHeaderTimeout = 5 * time.Second
	inUseProbe        = 500 * time.Millisecond // dial timeout of the "does someone answer" check
	maxErrorBody      = 4096
	// unixHost is the URL host of requests over a unix socket; the dialer ignores it.
	unixHost = "moor-control"
)

// ErrInUse is wrapped by Listen's error when a server already accepts on the socket.
var ErrInUse = errors.New("another server answers on this control socket")

// Endpoint is a parsed control endpoint.
type Endpoint struct {
	Network string // "unix" or "tcp"
	Address string // socket path or ip:port
}

// String is the endpoint as Parse reads it.
func (e Endpoint) String() string { return e.Address }

// Parse reads an endpoint: "unix:" and a path, ip:port (loopback only), or a path.
func Parse(s string) (Endpoint, error) {
	if path, ok := strings.CutPrefix(s, unixPrefix); ok {
		if path == "" {
			return Endpoint{}, fmt.Errorf("control endpoint %q: empty socket path", s)
		}
		return Endpoint{Network: "unix", Address: path}, nil
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		if !ap.Addr().IsLoopback() {
			return Endpoint{}, fmt.Errorf("control endpoint %q: not a loopback address", s)
		}
		return Endpoint{Network: "tcp", Address: s}, nil
	}
	if s == "" {
		return Endpoint{}, errors.New("control endpoint: empty")
	}
	return Endpoint{Network: "unix", Address: s}, nil
}

// Server is a control API being served.
type Server struct {
	srv  *http.Server
	ln   net.Listener
	path string // the unix socket to remove on Stop
}

// Listen parses endpoint, listens on it and serves handler in the background. For a unix
// socket it makes the directory (0700) and the socket (0600), replacing a socket file no
// server accepts on.
func Listen(endpoint string, handler http.Handler) (*Server, error) {
	ep, err := Parse(endpoint)
	if err != nil {
		return nil, err
	}
	s := &Server{}
	if ep.Network == "unix" {
		if s.ln, err = listenUnix(ep.Address); err != nil {
			return nil, err
		}
		s.path = ep.Address
	} else if s.ln, err = net.Listen("tcp", ep.Address); err != nil {
		return nil, fmt.Errorf("control: listening on %s: %w", ep.Address, err)
	}
	s.srv = &http.Server{Handler: handler, ReadHeaderTimeout: readHeaderTimeout}
	go func() { _ = s.srv.Serve(s.ln) }() // returns ErrServerClosed on Stop
	return s, nil
}

func listenUnix(path string) (net.Listener, error) {
	// A state directory (package statefs): no link, root's alone.
	if err := statefs.MkdirAll(filepath.Dir(path), DirMode); err != nil {
		return nil, fmt.Errorf("control: socket directory: %w", err)
	}
	if c, err := net.DialTimeout("unix", path, inUseProbe); err == nil {
		_ = c.Close()
		return nil, fmt.Errorf("control: %s: %w", path, ErrInUse)
	}
	// Nobody accepts: a socket left by a daemon that died, or nothing.
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("control: removing the stale socket %s: %w", path, err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control: listening on %s: %w", path, err)
	}
	if err := os.Chmod(path, SocketMode); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("control: %s: %w", path, err)
	}
	return ln, nil
}

// Addr is the address served on (the socket path, or ip:port with the port chosen).
func (s *Server) Addr() string {
	if s.path != "" {
		return s.path
	}
	return s.ln.Addr().String()
}

// Stop stops serving: requests in flight get up to grace to finish (none when grace is 0),
// then the connections are closed and the socket file removed.
func (s *Server) Stop(grace time.Duration) {
	if grace > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), grace)
		err := s.srv.Shutdown(ctx)
		cancel()
		if err != nil {
			_ = s.srv.Close()
		}
	} else {
		_ = s.srv.Close()
	}
	if s.path != "" {
		_ = os.Remove(s.path)
	}
}

// Client calls one endpoint's control API.
type Client struct {
	hc   *http.Client
	base string
}

// NewClient returns a client for endpoint whose every call is bounded by timeout.
func NewClient(endpoint string, timeout time.Duration) (*Client, error) {
	ep, err := Parse(endpoint)
	if err != nil {
		return nil, err
	}
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, ep.Network, ep.Address)
	}
	base := "http://" + ep.Address
	if ep.Network == "unix" {
		base = "http://" + unixHost
	}
	return &Client{
		hc:   &http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}},
		base: base,
	}, nil
}

// StatusError is an answer other than 200 OK; Body is the start of the answer's text.
type StatusError struct {
	Status string // "503 Service Unavailable"
	Code   int
	Body   string
}

func (e *StatusError) Error() string {
	if e.Body == "" {
		return e.Status
	}
	return e.Status + ": " + e.Body
}

// Do sends method to path ("/healthz?network=x") and returns the body of a 200 answer; any
// other status is a *StatusError.
func (c *Client) Do(method, path string) ([]byte, error) {
	req, err := http.NewRequest(method, c.base+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		return nil, &StatusError{Status: resp.Status, Code: resp.StatusCode, Body: strings.TrimSpace(string(body))}
	}
	return io.ReadAll(resp.Body)
}

// Get is Do with GET.
func (c *Client) Get(path string) ([]byte, error) { return c.Do(http.MethodGet, path) }

// Post is Do with POST and no body.
func (c *Client) Post(path string) ([]byte, error) { return c.Do(http.MethodPost, path) }
