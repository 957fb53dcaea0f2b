package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/moornet/moor/control"
)

// Control API tuning.
const (
	healthTimeout = 300 * time.Millisecond
	clientTimeout = 15 * time.Second
)

// listen serves the control API on a.opts.Listen (see package control for the endpoint
// syntax); it fails when another agent answers there.
func (a *Agent) listen() (*control.Server, error) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", a.healthz)
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(a.status())
	})
	mux.HandleFunc("GET /metrics", a.metrics)
	mux.HandleFunc("POST /rotate-key", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), leaveTimeout)
		defer cancel()
		n, err := a.rotateKeys(ctx)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "rotated %d\n", n)
	})
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
	srv, err := control.Listen(a.opts.Listen, mux)
	if errors.Is(err, control.ErrInUse) {
		return nil, fmt.Errorf("agent: another agent answers on %s", a.opts.Listen)
	}
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	return srv, nil
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
		{"moor_overlay_firewall_repairs_total", "times the network's nftables rules were found removed or changed and re-applied", "counter", func(n *network) float64 { return float64(n.fwRepairs.Load()) }},
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

// call sends method to path on the agent at endpoint.
func call(endpoint, method, path string, timeout time.Duration) ([]byte, error) {
	c, err := control.NewClient(endpoint, timeout)
	if err != nil {
		return nil, err
	}
	return c.Do(method, path)
}

// Healthy reports whether an agent answers on endpoint and has synced network (every
// network when empty).
func Healthy(endpoint, network string) bool {
	path := "/healthz"
	if network != "" {
		path += "?network=" + url.QueryEscape(network)
	}
	_, err := call(endpoint, http.MethodGet, path, healthTimeout)
	return err == nil
}

// Running reports whether an agent answers on endpoint at all, synced or not.
func Running(endpoint string) bool {
	_, err := call(endpoint, http.MethodGet, "/healthz", healthTimeout)
	var se *control.StatusError
	return err == nil || errors.As(err, &se)
}

// RequestLeave asks the agent on endpoint to leave and waits for it.
func RequestLeave(endpoint string) error { return post(endpoint, "/leave", "leave") }

// RequestRotateKey asks the agent on endpoint to rotate its keys (rotateKeys).
func RequestRotateKey(endpoint string) error {
	return post(endpoint, "/rotate-key", "rotate its keys")
}

// post asks the agent on endpoint to do what (a POST to path) and waits for its answer.
func post(endpoint, path, what string) error {
	_, err := call(endpoint, http.MethodPost, path, clientTimeout)
	var se *control.StatusError
	if errors.As(err, &se) {
		return fmt.Errorf("agent at %s could not %s: %s", endpoint, what, se.Body)
	}
	if err != nil {
		return fmt.Errorf("asking the agent at %s to %s: %w", endpoint, what, err)
	}
	return nil
}

// FetchStatus reads the agent's /status.
func FetchStatus(endpoint string) (Status, error) {
	var s Status
	body, err := call(endpoint, http.MethodGet, "/status", clientTimeout)
	if err != nil {
		return s, fmt.Errorf("agent status: %w", err)
	}
	return s, json.Unmarshal(body, &s)
}

// FetchMetrics reads the agent's /metrics text.
func FetchMetrics(endpoint string) (string, error) {
	body, err := call(endpoint, http.MethodGet, "/metrics", clientTimeout)
	return string(body), err
}
