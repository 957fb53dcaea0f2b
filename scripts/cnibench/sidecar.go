package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// moorDNS is the moor-dns entry of a suite, with the sidecar's paths in the run's data
// dir (never the machine's /run/moor).
func moorDNS(e *runEnv) map[string]any {
	return map[string]any{
		"type":          "moor-dns",
		"storeDir":      filepath.Join(e.data, "dns-records"),
		"controlSocket": filepath.Join(e.data, "dns.sock"),
		"pidFile":       filepath.Join(e.data, "dns.pid"),
		"idleTimeout":   "-1s",
		"capabilities":  map[string]bool{"aliases": true},
	}
}

// sidecarDriver stops the moor-dns sidecar its run's ADDs started.
type sidecarDriver struct {
	driver
	pidFile string
}

// withSidecar wraps a suite start whose chain has moorDNS so the run stops its sidecar.
func withSidecar(start func(*runEnv) (driver, error)) func(*runEnv) (driver, error) {
	return func(e *runEnv) (driver, error) {
		d, err := start(e)
		if err != nil {
			return nil, err
		}
		return &sidecarDriver{driver: d, pidFile: filepath.Join(e.data, "dns.pid")}, nil
	}
}

// close sends SIGTERM to the pid file's process and waits up to 5 s for it to go.
func (d *sidecarDriver) close() error {
	data, err := os.ReadFile(d.pidFile)
	if err != nil {
		return nil // no ADD got as far as starting it
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 1 {
		return nil
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if syscall.Kill(pid, 0) != nil {
			return nil
		}
	}
	return syscall.Kill(pid, syscall.SIGKILL)
}
