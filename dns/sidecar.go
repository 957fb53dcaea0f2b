package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"github.com/moornet/moor/dns/records"
	"github.com/moornet/moor/dns/server"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/statefs"
)

// healthPoll is how often ADD looks for a freshly started sidecar.
const healthPoll = 10 * time.Millisecond

// sidecarBinary is this executable: the sidecar is `moor-dns serve`.
func sidecarBinary() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("finding the moor-dns executable: %w", err)
	}
	return exe, nil
}

// ensureSidecar makes sure the sidecar of the plugin's network namespace answers on c's
// control socket and serves the record key names (it reads that record, or its network). It starts one, detached in its own session,
// when none answers; if several ADDs start one at once, the pid file lock lets exactly one
// run and the others exit. A sidecar of another namespace on the socket is never used
// (its gateways are not ours): when its namespace was deleted, or it does not say which it
// serves, it is stopped and replaced; when it serves another live namespace, the two
// share paths that must not be shared, and ADD fails saying so.
func ensureSidecar(call *plugins.Call, c *conf, sc storeConf, key records.RecordKey) error {
	// One round trip when it runs: the health check and the reload together.
	h, err := server.ReloadSidecar(c.ControlSocket, c.netns, key)
	var foreign *server.ForeignError
	switch {
	case err == nil && !h.FirewallRestart:
		return nil
	case err == nil:
		if err := replaceUnderprivileged(call, c, h); err != nil {
			return err
		}
	case errors.As(err, &foreign):
		if err := replaceForeign(call, c, foreign); err != nil {
			return err
		}
	case !errors.Is(err, server.ErrNotRunning):
		return err // ours answered, and its reload failed
	}
	// The sidecar refuses unsafe paths too, but only its log would say so.
	for _, p := range []string{c.PidFile, c.ControlSocket} {
		if err := statefs.CheckPath(p); err != nil {
			return err
		}
	}
	exe, err := sidecarBinary()
	if err != nil {
		return err
	}
	args := []string{"serve",
		"--store-dir", c.StoreDir,
		"--control-socket", c.ControlSocket,
		"--pid-file", c.PidFile,
		"--port", strconv.Itoa(c.Port),
		"--idle-timeout", c.idle.String(),
	}
	if c.KeepPrivileges {
		args = append(args, "--keep-privileges")
	}
	if c.FirewallRepair != nil && !*c.FirewallRepair {
		args = append(args, "--firewall-repair=false")
	} else {
		args = append(args, "--firewall-run-dir", c.runDir)
	}
	args = append(args, sc.serveArgs()...)
	// The sidecar logs where the plugin does, except to stderr: a detached process has none.
	logFile := call.Getenv("MOOR_LOG_FILE")
	if logFile == "" {
		logFile = c.LogFile
	}
	if logFile != "" && logFile != "stderr" {
		args = append(args, "--log-file", logFile)
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return codes.Wrap(codes.DNSServerFailure, "starting the DNS sidecar", err)
	}
	call.Log.Info("started DNS sidecar", "pid", cmd.Process.Pid)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(c.wait)
	for time.Now().Before(deadline) {
		_, err := server.Sidecar(c.ControlSocket, c.netns)
		if err == nil {
			return server.ReloadRecord(c.ControlSocket, key)
		}
		if errors.As(err, &foreign) {
			return sharedPathsError(foreign)
		}
		select {
		case err := <-exited:
			// Lost the race to another ADD's sidecar (it holds the pid file), or failed.
			if pid, ok := server.Running(c.PidFile); ok {
				call.Log.Info("DNS sidecar already started by another call", "pid", pid)
				exited = nil
				continue
			}
			return codes.Wrap(codes.DNSServerFailure, "the DNS sidecar exited at start (see its log)", err)
		case <-time.After(healthPoll):
		}
	}
	return codes.New(codes.TryAgainLater, fmt.Sprintf("the DNS sidecar did not answer on %s within %s", c.ControlSocket, c.wait))
}

// replaceForeign stops a sidecar of another namespace that answers on c's control socket
// when it may be replaced (see server.ForeignError.Replaceable), by a SIGTERM to the holder
// of c's pid file, and waits until it has let go of the pid file. The holder must be the
// process that answered (when that says its pid): a pid file is never trusted alone.
func replaceForeign(call *plugins.Call, c *conf, foreign *server.ForeignError) error {
	if !foreign.Replaceable() {
		return sharedPathsError(foreign)
	}
	pid, ok := server.Running(c.PidFile)
	if !ok || pid <= 0 || (foreign.Health.PID != 0 && foreign.Health.PID != pid) {
		return codes.Wrap(codes.DNSServerFailure, fmt.Sprintf("cannot replace the DNS sidecar on %s: its pid file %s names another process", c.ControlSocket, c.PidFile), foreign)
	}
	call.Log.Info("stopping the DNS sidecar of another network namespace", "pid", pid, "netns", foreign.Health.Netns, "orphaned", foreign.Health.Orphaned)
	if _, err := server.Stop(c.PidFile, c.wait); err != nil {
		return codes.Wrap(codes.DNSServerFailure, "replacing the DNS sidecar of another network namespace", err)
	}
	return nil
}

// replaceUnderprivileged stops the namespace's sidecar when its firewall repair needs
// privileges it dropped at start (server.Health.FirewallRestart: a network with the
// iptables backend came after it), so that the sidecar started next keeps them. DNS
// pauses for the restart (tens of milliseconds; resolvers retry); the records are in the
// store, so nothing is lost. When the pid file no longer names the process that answered,
// another ADD has replaced it already and nothing is stopped.
func replaceUnderprivileged(call *plugins.Call, c *conf, h server.Health) error {
	pid, ok := server.Running(c.PidFile)
	if !ok || pid <= 0 || pid != h.PID {
		return nil
	}
	call.Log.Info("restarting the DNS sidecar: its firewall repair needs the iptables backend's privileges", "pid", pid)
	if _, err := server.Stop(c.PidFile, c.wait); err != nil {
		return codes.Wrap(codes.DNSServerFailure, "restarting the DNS sidecar for the iptables backend's firewall repair", err)
	}
	return nil
}

// sharedPathsError: the sidecar on the socket serves another live namespace.
func sharedPathsError(foreign *server.ForeignError) error {
	return codes.Wrap(codes.DNSServerFailure, "controlSocket, pidFile and storeDir must differ between network namespaces (leave them unset: each namespace then gets its own)", foreign)
}
