// Package pluginexec runs another CNI plugin the way the spec's delegation says: the
// binary found in CNI_PATH, the caller's environment with the CNI_* variables of the
// delegated command, the config on stdin; its stdout is the result, or on a non-zero exit
// a CNI error that becomes the caller's.
//
// It exists instead of libcni's invoke package because that package links OpenTelemetry
// and through it net/http and crypto/tls: about 3 MB of binary, more pages mapped and
// more package initialisation on every exec of every moor plugin, for a few lines of
// os/exec. What it does not do: version negotiation (the delegate answers in the config's
// cniVersion, as moor's callers ask) or the libcni result cache.
package pluginexec

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/types/create"
)

// ErrNotFound is returned by Find for a plugin in no directory of the path.
var ErrNotFound = errors.New("plugin not found")

// Find returns the first regular file named name in the directories of cniPath (a
// list separated like PATH).
func Find(name, cniPath string) (string, error) {
	if name == "" || strings.ContainsRune(name, os.PathSeparator) {
		return "", fmt.Errorf("%w: %q is not a plugin name", ErrNotFound, name)
	}
	for _, dir := range filepath.SplitList(cniPath) {
		if dir == "" {
			continue
		}
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: %s in %q", ErrNotFound, name, cniPath)
}

// Args are the CNI_* variables of the delegated command.
type Args struct {
	Command, ContainerID, Netns, IfName, Args, Path string
}

// Env is this process's environment with a's CNI_* variables in place of its own.
func (a Args) Env() []string {
	set := map[string]string{
		"CNI_COMMAND": a.Command, "CNI_CONTAINERID": a.ContainerID, "CNI_NETNS": a.Netns,
		"CNI_IFNAME": a.IfName, "CNI_ARGS": a.Args, "CNI_PATH": a.Path,
	}
	var env []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); !isCNI(set, k) {
			env = append(env, kv)
		}
	}
	for k, v := range set {
		env = append(env, k+"="+v)
	}
	return env
}

func isCNI(set map[string]string, k string) bool {
	_, ok := set[k]
	return ok
}

// killGrace bounds the wait for the plugin's output after it was killed.
const killGrace = time.Second

// Run execs bin with env and stdin and returns its stdout. The plugin runs in a process
// group of its own, which ctx's end kills whole: a child it started (a script's sleep, a
// helper) that keeps stdout open cannot hold the call past the deadline. A non-zero exit
// is the plugin's *types.Error when its stdout holds one, else an error with what it
// wrote to stderr, wrapping the exec error (so that a caller finds its deadline).
func Run(ctx context.Context, bin string, stdin []byte, env []string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = env
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = killGrace
	if err := cmd.Run(); err != nil {
		var cniErr types.Error
		if json.Unmarshal(stdout.Bytes(), &cniErr) == nil && cniErr.Code != 0 {
			return nil, &cniErr
		}
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = "no error message"
		}
		return nil, fmt.Errorf("%s failed (%s): %w", filepath.Base(bin), msg, err)
	}
	return stdout.Bytes(), nil
}

// Result decodes a plugin's stdout as a result of the version it names.
func Result(stdout []byte) (types.Result, error) {
	return create.CreateFromBytes(stdout)
}
