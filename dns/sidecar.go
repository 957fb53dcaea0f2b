package main

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"github.com/moornet/moor/dns/server"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
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

// ensureSidecar makes sure a sidecar for c's paths answers and has re-read the store. It
// starts one, detached in its own session, when none answers; if several ADDs start one at
// once, the pid file lock lets exactly one run and the others exit.
func ensureSidecar(call *plugins.Call, c *conf, sc storeConf) error {
	if server.Healthy(c.ControlSocket) {
		return server.Reload(c.ControlSocket)
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
		if server.Healthy(c.ControlSocket) {
			return server.Reload(c.ControlSocket)
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
	return codes.New(codes.DNSServerFailure, fmt.Sprintf("the DNS sidecar did not answer on %s within %s", c.ControlSocket, c.wait))
}
