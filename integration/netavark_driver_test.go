package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
)

// Debian 12's netavark (1.4.0) predates external plugins (netavark 1.6): it answers a
// network of driver moor-bridge with "unknown network driver" and has no
// --plugin-directory (TestNetavarkRealBinary checks both). The tests therefore drive
// moor-netavark with nvDriver, which speaks the plugin protocol as netavark's own plugin
// driver (src/network/plugin.rs) and podman (libnetwork/netavark/exec.go) do:
//   - the plugin is exec'd with the command and, for setup and teardown, the netns path
//     as its only argument, from the host's network namespace (here a test netns);
//   - the request is one JSON document on stdin, which is then closed;
//   - stdout is read to the end, then the exit status decides: 0 is success (setup's
//     stdout is a StatusBlock; teardown's is empty), anything else an error object,
//     decoded with unknown fields disallowed, as podman does.
//
// Requests are written here from plugin-API.md's field names, not with moor's own types,
// so that a mistake in those types cannot hide itself.

// nvDriver runs moor-netavark for one test.
type nvDriver struct {
	t    *testing.T
	host ns.NetNS
	env  []string
}

// newNVDriver runs the plugin in host with moor's state under runDir (MOOR_RUN_DIR, which
// moor-dns reads too) and podman's network files in runDir/podman-networks. CNI_PATH is
// left unset: the plugin finds moor's plugins beside itself.
func newNVDriver(t *testing.T, host ns.NetNS, runDir string) *nvDriver {
	env := []string{
		"MOOR_RUN_DIR=" + runDir,
		"MOOR_LOG_FILE=" + filepath.Join(runDir, "moor.log"),
		"MOOR_NETAVARK_NETWORK_DIR=" + filepath.Join(runDir, "podman-networks"),
	}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CNI_PATH=") && !strings.HasPrefix(kv, "MOOR_") {
			env = append(env, kv)
		}
	}
	return &nvDriver{t: t, host: host, env: env}
}

// nvError is the plugin's error object and exit status.
type nvError struct {
	Exit int
	Msg  string
}

func (e *nvError) Error() string { return fmt.Sprintf("exit %d: %s", e.Exit, e.Msg) }

// execJSON runs bin with args in host, the JSON of stdin on its stdin and env as its
// whole environment, the way netavark and podman start a plugin.
func execJSON(t *testing.T, host ns.NetNS, bin string, env []string, stdin any, args ...string) (stdout, stderr []byte, err error) {
	t.Helper()
	in, err := json.Marshal(stdin)
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	var runErr error
	err = host.Do(func(ns.NetNS) error {
		cmd := exec.Command(bin, args...)
		cmd.Env = env
		cmd.Stdin = bytes.NewReader(in)
		cmd.Stdout, cmd.Stderr = &out, &errOut
		runErr = cmd.Run()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out.Bytes(), errOut.Bytes(), runErr
}

// run executes the plugin and returns its stdout on exit status 0, an *nvError otherwise.
func (d *nvDriver) run(stdin any, args ...string) ([]byte, error) {
	d.t.Helper()
	stdout, stderr, runErr := execJSON(d.t, d.host, filepath.Join(binDir, "moor-netavark"), d.env, stdin, args...)
	var exitErr *exec.ExitError
	switch {
	case runErr == nil:
		return stdout, nil
	case errors.As(runErr, &exitErr) && exitErr.Exited():
		dec := json.NewDecoder(bytes.NewReader(stdout))
		dec.DisallowUnknownFields()
		var obj struct {
			Error string `json:"error"`
		}
		if err := dec.Decode(&obj); err != nil {
			d.t.Fatalf("%v: exit %d with stdout that is not an error object (%v); stderr %s", args, exitErr.ExitCode(), err, stderr)
		}
		return nil, &nvError{Exit: exitErr.ExitCode(), Msg: obj.Error}
	default:
		d.t.Fatalf("%v: %v; stderr %s", args, runErr, stderr)
		return nil, runErr
	}
}

// nvStatus is netavark's StatusBlock as podman decodes it.
type nvStatus struct {
	DNSSearchDomains []string `json:"dns_search_domains"`
	DNSServerIPs     []string `json:"dns_server_ips"`
	Interfaces       map[string]struct {
		MACAddress string `json:"mac_address"`
		Subnets    []struct {
			IPNet   string `json:"ipnet"`
			Gateway string `json:"gateway"`
		} `json:"subnets"`
	} `json:"interfaces"`
}

func strictDecode(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// create runs `create` with a network and returns the completed network.
func (d *nvDriver) create(network map[string]any) (map[string]any, error) {
	d.t.Helper()
	out, err := d.run(network, "create")
	if err != nil {
		return nil, err
	}
	var n map[string]any
	if err := json.Unmarshal(out, &n); err != nil {
		d.t.Fatalf("create printed %q: %v", out, err)
	}
	return n, nil
}

// setup runs `setup <netns>` and decodes the StatusBlock.
func (d *nvDriver) setup(netns string, req map[string]any) (nvStatus, error) {
	d.t.Helper()
	var st nvStatus
	out, err := d.run(req, "setup", netns)
	if err != nil {
		return st, err
	}
	if err := strictDecode(out, &st); err != nil {
		d.t.Fatalf("setup printed %q, not a StatusBlock: %v", out, err)
	}
	return st, nil
}

// teardown runs `teardown <netns>`; it must print nothing on success.
func (d *nvDriver) teardown(netns string, req map[string]any) error {
	d.t.Helper()
	out, err := d.run(req, "teardown", netns)
	if err == nil && len(bytes.TrimSpace(out)) != 0 {
		d.t.Errorf("teardown printed %q, want nothing", out)
	}
	return err
}

// nvRequest is a setup/teardown request as plugin-API.md shows it.
type nvRequest struct {
	id, name string
	ips      []string
	mac      string
	aliases  []string
	ports    []map[string]any
}

func (r nvRequest) body(network map[string]any) map[string]any {
	opts := map[string]any{"interface_name": "eth0"}
	if r.ips != nil {
		opts["static_ips"] = r.ips
	}
	if r.mac != "" {
		opts["static_mac"] = r.mac
	}
	if r.aliases != nil {
		opts["aliases"] = r.aliases
	}
	body := map[string]any{"container_id": r.id, "container_name": r.name, "network": network, "network_options": opts}
	if r.ports != nil {
		body["port_mappings"] = r.ports
	}
	return body
}

// wantNVError checks a failure: exit status 1 and a message naming mentions.
func wantNVError(t *testing.T, err error, mentions string) {
	t.Helper()
	var e *nvError
	if !errors.As(err, &e) {
		t.Fatalf("error %v, want the plugin's error object", err)
	}
	if e.Exit != 1 || !strings.Contains(e.Msg, mentions) {
		t.Fatalf("error %v, want exit 1 naming %q", e, mentions)
	}
}
