// Package plugintest runs moor plugins in-process for tests and makes throwaway network
// namespaces. The harness injects environment, stdin and stdout through plugins.Env, so
// tests may run in parallel; nothing global is swapped.
//
// It is for tests only: nothing in a plugin binary imports it.
package plugintest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/moornet/moor/plugins"
)

// Invocation is one verb call as a runtime would make it.
type Invocation struct {
	Command     string
	ContainerID string
	Netns       string
	IfName      string
	Args        string // CNI_ARGS
	Path        string // CNI_PATH
	Config      []byte // stdin
	Env         map[string]string
	Stderr      io.Writer // optional
}

// Run invokes p and returns what it printed on stdout and the CNI error, if any.
func Run(p plugins.Plugin, inv Invocation) ([]byte, *types.Error) {
	env := map[string]string{
		"CNI_COMMAND":     inv.Command,
		"CNI_CONTAINERID": inv.ContainerID,
		"CNI_NETNS":       inv.Netns,
		"CNI_IFNAME":      inv.IfName,
		"CNI_ARGS":        inv.Args,
		"CNI_PATH":        inv.Path,
		"MOOR_LOG_FILE":   "stderr",
	}
	for k, v := range inv.Env {
		env[k] = v
	}
	stderr := inv.Stderr
	if stderr == nil {
		stderr = io.Discard
	}
	var out bytes.Buffer
	err := p.Run(plugins.Env{
		Getenv: func(k string) string { return env[k] },
		Stdin:  bytes.NewReader(inv.Config),
		Stdout: &out,
		Stderr: stderr,
	})
	return out.Bytes(), err
}

// Config renders a plugin config: base fields plus extra, as JSON.
func Config(cniVersion, name, pluginType string, extra map[string]any) []byte {
	conf := map[string]any{"cniVersion": cniVersion, "name": name, "type": pluginType}
	for k, v := range extra {
		conf[k] = v
	}
	data, err := json.Marshal(conf)
	if err != nil {
		panic(fmt.Sprintf("plugintest.Config: %v", err))
	}
	return data
}
