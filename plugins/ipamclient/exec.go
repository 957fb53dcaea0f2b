package ipamclient

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// killGrace bounds the wait for the plugin's output after it was killed.
const killGrace = time.Second

// groupExec runs an IPAM plugin as invoke.RawExec does, but in a process group of its
// own that the deadline kills whole: a child the plugin started (a shell script's sleep,
// a helper) that keeps its stdout open cannot hold the call past the deadline.
type groupExec struct {
	invoke.RawExec        // FindInPath
	version.PluginDecoder // Decode
}

// ExecPlugin implements invoke.Exec.
func (e *groupExec) ExecPlugin(ctx context.Context, path string, stdin []byte, environ []string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	c := exec.CommandContext(ctx, path)
	c.Env = environ
	c.Stdin = bytes.NewReader(stdin)
	c.Stdout, c.Stderr = &stdout, &stderr
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGKILL) }
	c.WaitDelay = killGrace
	if err := c.Run(); err != nil {
		return nil, execError(err, stdout.Bytes(), stderr.Bytes())
	}
	return stdout.Bytes(), nil
}

// execError is the plugin's own CNI error when it printed one, else a message with what
// it wrote to stderr; the exec error stays in the chain (a deadline is found by the caller).
func execError(err error, stdout, stderr []byte) error {
	if len(stdout) > 0 {
		var te types.Error
		if json.Unmarshal(stdout, &te) == nil && te.Code != 0 {
			return &te
		}
	}
	msg := strings.TrimSpace(string(stderr))
	if msg == "" {
		msg = "no error message"
	}
	return fmt.Errorf("plugin failed (%s): %w", msg, err)
}
