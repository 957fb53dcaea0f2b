package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// Process and namespace tuning.
const (
	stopGrace    = 5 * time.Second
	stopPoll     = 20 * time.Millisecond
	netnsRunDir  = "/run/netns"
	procStatTime = 22 // field of /proc/<pid>/stat holding the start time
	childPath    = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// Proc is a process the lab started, identified by PID and start time so that a PID the
// kernel reused is never signalled.
type Proc struct {
	PID   int    `json:"pid"`
	Start uint64 `json:"start"`
	Cmd   string `json:"cmd"`
	Log   string `json:"log"`
}

// waiters reaps the children this process started, so stopped ones do not linger as
// zombies in a long-lived process (tests).
var waiters sync.Map // pid -> chan struct{}

// netnsPath is where `ip netns` binds a named namespace.
func netnsPath(name string) string { return netnsRunDir + "/" + name }

// addNetns creates a named namespace with lo up.
func addNetns(name string) error {
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns add %s: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return fmt.Errorf("lo up in %s: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// delNetns deletes a named namespace; a missing one is fine.
func delNetns(name string) error {
	if _, err := os.Stat(netnsPath(name)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if out, err := exec.Command("ip", "netns", "delete", name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns delete %s: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// inNetns runs fn on a thread inside the named namespace (containernetworking's ns.Do):
// sockets fn opens and processes it starts belong to that namespace.
func inNetns(name string, fn func() error) error {
	return ns.WithNetNSPath(netnsPath(name), func(ns.NetNS) error { return fn() })
}

// dialer opens TCP connections from inside a namespace, for etcd clients of this process.
func dialer(netns string) func(ctx context.Context, addr string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		var c net.Conn
		err := inNetns(netns, func() error {
			var d net.Dialer
			var err error
			c, err = d.DialContext(ctx, "tcp", strings.TrimPrefix(strings.TrimPrefix(addr, "http://"), "https://"))
			return err
		})
		return c, err
	}
}

// start runs a detached process (own session) inside the namespace, output to logPath,
// with a PATH and env as its whole environment.
func start(netns, logPath string, env []string, bin string, args ...string) (Proc, error) {
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, fileMode)
	if err != nil {
		return Proc{}, err
	}
	defer logFile.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append([]string{childPath}, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := inNetns(netns, cmd.Start); err != nil {
		return Proc{}, fmt.Errorf("starting %s in %s: %w", bin, netns, err)
	}
	done := make(chan struct{})
	waiters.Store(cmd.Process.Pid, done)
	go func() { _ = cmd.Wait(); close(done) }()
	st, _ := startTime(cmd.Process.Pid)
	return Proc{PID: cmd.Process.Pid, Start: st, Cmd: bin + " " + strings.Join(args, " "), Log: logPath}, nil
}

// startTime reads a process's start time (clock ticks since boot).
func startTime(pid int) (uint64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(data)
	// The command name may hold spaces and parentheses: fields start after the last ')'.
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	const offset = 3 // fields after ')' start at field 3 (state)
	if len(fields) <= procStatTime-offset {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	return strconv.ParseUint(fields[procStatTime-offset], 10, 64)
}

// Alive reports whether the process still runs (and is the one the lab started).
func (p Proc) Alive() bool {
	if p.PID <= 0 {
		return false
	}
	st, err := startTime(p.PID)
	if err != nil || st != p.Start {
		return false
	}
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.PID))
	s := string(data)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(fields) > 0 && fields[0] != "Z"
}

// Stop sends SIGTERM, waits up to stopGrace, then SIGKILLs. A process that is gone (or
// whose PID now belongs to another process) is left alone.
func (p Proc) Stop() {
	if !p.Alive() {
		p.reap()
		return
	}
	_ = syscall.Kill(p.PID, syscall.SIGTERM)
	deadline := time.Now().Add(stopGrace)
	for time.Now().Before(deadline) && p.Alive() {
		time.Sleep(stopPoll)
	}
	if p.Alive() {
		_ = syscall.Kill(p.PID, syscall.SIGKILL)
	}
	p.reap()
}

// Kill sends SIGKILL at once (a crash) and waits for the process to be gone.
func (p Proc) Kill() {
	if p.Alive() {
		_ = syscall.Kill(p.PID, syscall.SIGKILL)
	}
	deadline := time.Now().Add(stopGrace)
	for time.Now().Before(deadline) && p.Alive() {
		time.Sleep(stopPoll)
	}
	p.reap()
}

// reap waits for a child of this process to be collected.
func (p Proc) reap() {
	if v, ok := waiters.Load(p.PID); ok {
		select {
		case <-v.(chan struct{}):
		case <-time.After(stopGrace):
		}
		waiters.Delete(p.PID)
	}
}
