package agent

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
)

// Control API tuning.
const (
	socketMode      = 0o600
	socketDirMode   = 0o700
	readTimeout     = 5 * time.Second
	healthTimeout   = 300 * time.Millisecond
	clientTimeout   = 15 * time.Second
	unixPrefix      = "unix:"
	controlHostName = "moor-overlay-agent" // the Host of requests over a unix socket
)

// isUnix reports whether endpoint names a unix socket, and its path.
func isUnix(endpoint string) (string, bool) {
	if strings.HasPrefix(endpoint, unixPrefix) {
		return strings.TrimPrefix(endpoint, unixPrefix), true
	}
	if _, err := netip.ParseAddrPort(endpoint); err == nil {
		return "", false
	}
	return endpoint, true
}

func (a *Agent) listen() (*http.Server, net.Listener, error) {
	var ln net.Listener
	var err error
	if path, ok := isUnix(a.opts.Listen); ok {
		if err := os.MkdirAll(filepath.Dir(path), socketDirMode); err != nil {
			return nil, nil, fmt.Errorf("agent: socket directory: %w", err)
		}
		if Running(a.opts.Listen) {
			return nil, nil, fmt.Errorf("agent: another agent answers on %s", path)
		}
		_ = os.Remove(path) // a stale socket of an agent that died
		if ln, err = net.Listen("unix", path); err != nil {
			return nil, nil, fmt.Errorf("agent: listening on %s: %w", path, err)
		}
		if err := os.Chmod(path, socketMode); err != nil {
			ln.Close()
			return nil, nil, err
		}
	} else {
		ap, _ := netip.ParseAddrPort(a.opts.Listen)
		if !ap.Addr().IsLoopback() {
			return nil, nil, fmt.Errorf("agent: listen address %s is not a loopback address", a.opts.Listen)
		}
		if ln, err = net.Listen("tcp", a.opts.Listen); err != nil {
			return nil, nil, fmt.Errorf("agent: listening on %s: %w", a.opts.Listen, err)
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", a.healthz)
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(a.status())
	})
	mux.HandleFunc("GET /metrics", a.metrics)
	mux.HandleFunc("POST /leave", func(w http.ResponseWriter, _ *http.Request) {
		if err := a.doLeave(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "left")
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		a.leftOne.Do(func() { close(a.left) })
	})
	return &http.Server{Handler: mux, ReadHeaderTimeout: readTimeout}, ln, nil
}

func (a *Agent) healthz(w http.ResponseWriter, r *http.Request) {
	want := r.URL.Query().Get("network")
	var bad []string
	found := want == ""
	for _, n := range a.nets {
		if want != "" && n.conf.Name != want {
			continue
		}
		found = true
		if !n.ready.Load() {
			n.mu.Lock()
			bad = append(bad, fmt.Sprintf("%s: not synced (%s)", n.conf.Name, n.lastErr))
			n.mu.Unlock()
		}
	}
	switch {
	case !found:
		http.Error(w, "network "+want+" is not served by this agent", http.StatusNotFound)
	case len(bad) > 0:
		http.Error(w, strings.Join(bad, "; "), http.StatusServiceUnavailable)
	default:
		fmt.Fprintln(w, "ok")
	}
}

func (a *Agent) metrics(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	type metric struct {
		name, help, kind string
		value            func(n *network) float64
	}
	ms := []metric{
		{"moor_overlay_ready", "1 when the network's lease is held and the data plane synced", "gauge", func(n *network) float64 { return b2f(n.ready.Load()) }},
		{"moor_overlay_peers", "other hosts with entries on this host", "gauge", func(n *network) float64 {
			n.mu.Lock()
			defer n.mu.Unlock()
			return float64(len(n.peers))
		}},
		{"moor_overlay_resyncs_total", "full resyncs run", "counter", func(n *network) float64 { return float64(n.resyncs.Load()) }},
		{"moor_overlay_resync_duration_seconds", "duration of the last full resync", "gauge", func(n *network) float64 { return seconds(n.lastDur.Load()) }},
		{"moor_overlay_resync_duration_seconds_total", "time spent in full resyncs", "counter", func(n *network) float64 { return seconds(n.sumDur.Load()) }},
		{"moor_overlay_drift_entries_total", "kernel entries a periodic resync found wrong, missing or unjustified", "counter", func(n *network) float64 { return float64(n.drift.Load()) }},
		{"moor_overlay_events_total", "lease events applied from the watch", "counter", func(n *network) float64 { return float64(n.events.Load()) }},
		{"moor_overlay_errors_total", "store and kernel errors", "counter", func(n *network) float64 { return float64(n.errs.Load()) }},
		{"moor_overlay_reclaimed_total", "leases of silent hosts this agent reclaimed", "counter", func(n *network) float64 { return float64(n.reclaimed.Load()) }},
	}
	for _, m := range ms {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", m.name, m.help, m.name, m.kind)
		for _, n := range a.nets {
			fmt.Fprintf(w, "%s{network=%q} %g\n", m.name, n.conf.Name, m.value(n))
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func seconds(ns int64) float64 { return time.Duration(ns).Seconds() }

// client returns an HTTP client for endpoint and the base URL.
func client(endpoint string, timeout time.Duration) (*http.Client, string) {
	path, unix := isUnix(endpoint)
	if !unix {
		return &http.Client{Timeout: timeout}, "http://" + endpoint
	}
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}
	return &http.Client{Timeout: timeout, Transport: tr}, "http://" + controlHostName
}

// Healthy reports whether an agent answers on endpoint and has synced network (every
// network when empty).
func Healthy(endpoint, network string) bool {
	code, err := probe(endpoint, network)
	return err == nil && code == http.StatusOK
}

// Running reports whether an agent answers on endpoint at all, synced or not.
func Running(endpoint string) bool {
	_, err := probe(endpoint, "")
	return err == nil
}

func probe(endpoint, network string) (int, error) {
	c, base := client(endpoint, healthTimeout)
	url := base + "/healthz"
	if network != "" {
		url += "?network=" + network
	}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// RequestLeave asks the agent on endpoint to leave and waits for it.
func RequestLeave(endpoint string) error {
	c, base := client(endpoint, clientTimeout)
	resp, err := c.Post(base+"/leave", "text/plain", nil)
	if err != nil {
		return fmt.Errorf("asking the agent at %s to leave: %w", endpoint, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("agent at %s could not leave: %s", endpoint, strings.TrimSpace(string(body)))
	}
	return nil
}

// FetchStatus reads the agent's /status.
func FetchStatus(endpoint string) (Status, error) {
	var s Status
	c, base := client(endpoint, clientTimeout)
	resp, err := c.Get(base + "/status")
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return s, errors.New("agent status: " + resp.Status)
	}
	return s, json.NewDecoder(resp.Body).Decode(&s)
}

// FetchMetrics reads the agent's /metrics text.
func FetchMetrics(endpoint string) (string, error) {
	c, base := client(endpoint, clientTimeout)
	resp, err := c.Get(base + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return string(body), err
}
