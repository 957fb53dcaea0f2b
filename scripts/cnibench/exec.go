package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// sample is one measured operation.
type sample struct {
	Dur    time.Duration // fork of the first plugin to exit of the last (or in-process span)
	CPU    time.Duration // user+system of the plugin processes and their children
	MaxRSS int64         // KiB, the largest of the operation's processes; -1: not measured
	Execs  int
}

// opTimer accumulates a sample over the plugin execs of one operation. It travels in the
// context libcni passes to Exec, so concurrent operations on one CNIConfig stay apart.
type opTimer struct {
	mu          sync.Mutex
	first, last time.Time
	s           sample
}

func newTimer() *opTimer { return &opTimer{s: sample{MaxRSS: -1}} }

type timerKey struct{}

func withTimer(ctx context.Context, t *opTimer) context.Context {
	return context.WithValue(ctx, timerKey{}, t)
}

// record adds one exec; rss is its peak in KiB, or -1 when not measured.
func (t *opTimer) record(start, end time.Time, st *syscall.Rusage, rss int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.s.Execs == 0 || start.Before(t.first) {
		t.first = start
	}
	if end.After(t.last) {
		t.last = end
	}
	t.s.Execs++
	if st != nil {
		t.s.CPU += time.Duration(st.Utime.Nano() + st.Stime.Nano())
	}
	t.s.MaxRSS = max(t.s.MaxRSS, rss)
}

func (t *opTimer) sample() sample {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.s
	s.Dur = t.last.Sub(t.first)
	return s
}

// timedExec is libcni's invoke.Exec. It runs a plugin as invoke.RawExec does (env as
// given, config on stdin, stdout captured, a CNI error decoded from stdout on failure)
// and records the exec into the context's opTimer. The exec'd process inherits the
// calling thread's network namespace.
//
// Peak RSS needs rssVia (GNU time): Go starts children with vfork (CLONE_VM), and at
// exec the kernel folds the shared parent's high-water RSS into the child's ru_maxrss,
// so wait4 here would report the harness's own size. GNU time forks the plugin from a
// process of about 1 MiB and reports the plugin's own peak. It adds its own start-up to
// the timings, so only the memory scenario uses it.
type timedExec struct {
	rssVia string
}

var _ invoke.Exec = timedExec{}

func (e timedExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	c := exec.CommandContext(ctx, pluginPath)
	var rssFile string
	if e.rssVia != "" {
		f, err := os.CreateTemp("", "moorbench-rss-")
		if err != nil {
			return nil, err
		}
		f.Close()
		rssFile = f.Name()
		defer os.Remove(rssFile)
		c = exec.CommandContext(ctx, e.rssVia, "-f", "%M", "-o", rssFile, pluginPath)
	}
	c.Env = environ
	c.Stdin = bytes.NewReader(stdin)
	c.Stdout, c.Stderr = &stdout, &stderr
	start := time.Now()
	err := c.Run()
	end := time.Now()
	if t, ok := ctx.Value(timerKey{}).(*opTimer); ok && c.ProcessState != nil {
		ru, _ := c.ProcessState.SysUsage().(*syscall.Rusage)
		rss := int64(-1)
		if rssFile != "" {
			rss = readKiB(rssFile)
		}
		t.record(start, end, ru, rss)
	}
	if err != nil {
		return nil, pluginError(pluginPath, err, stdout.Bytes(), stderr.Bytes())
	}
	return stdout.Bytes(), nil
}

// findGNUTime returns GNU time's path, or "" (busybox's time reports ru_maxrss four
// times too large: it converts pages to KiB on a value already in KiB).
func findGNUTime() string {
	p, err := exec.LookPath("time")
	if err != nil {
		return ""
	}
	out, err := exec.Command(p, "--version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "GNU") {
		return ""
	}
	return p
}

// readKiB reads GNU time's %M output (the last line: KiB).
func readKiB(path string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return -1
	}
	lines := strings.Fields(string(b))
	if len(lines) == 0 {
		return -1
	}
	v, err := strconv.ParseInt(lines[len(lines)-1], 10, 64)
	if err != nil {
		return -1
	}
	return v
}

func (timedExec) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}

func (timedExec) Decode(jsonBytes []byte) (version.PluginInfo, error) {
	return (&version.PluginDecoder{}).Decode(jsonBytes)
}

// pluginError is the plugin's CNI error when it printed one, else the exec error with
// stderr.
func pluginError(path string, err error, stdout, stderr []byte) error {
	var e types.Error
	if len(stdout) > 0 && json.Unmarshal(stdout, &e) == nil && (e.Code != 0 || e.Msg != "") {
		return &e
	}
	return fmt.Errorf("%s: %w (stderr %q)", path, err, bytes.TrimSpace(stderr))
}
