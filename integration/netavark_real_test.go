package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// netavarkBinary is where Debian's netavark package installs netavark.
const netavarkBinary = "/usr/lib/podman/netavark"

// runNetavark runs the real netavark in the world's host netns with moor's environment
// (netavark passes it on to the plugins it runs).
func (w *nvWorld) runNetavark(stdin any, args ...string) (stdout, stderr []byte, err error) {
	return execJSON(w.t, w.host, netavarkBinary, w.nv.env, stdin, args...)
}

// netavarkRequest is netavark's own stdin (NetworkOptions of src/network/types.rs) for
// one container on one network.
func netavarkRequest(network map[string]any, req nvRequest) map[string]any {
	body := req.body(network)
	name := network["name"].(string)
	return map[string]any{
		"container_id": req.id, "container_name": req.name,
		"networks":     map[string]any{name: body["network_options"]},
		"network_info": map[string]any{name: network},
	}
}

// TestNetavarkRealBinary drives moor-netavark through the real netavark when this
// machine's netavark can load external plugins (netavark 1.6 and later, which have
// --plugin-directory). Debian 12's 1.4.0 cannot: the test then checks that it indeed
// refuses a moor-bridge network as an unknown driver (so the protocol driver of the
// other TestNetavark* tests stands in for a reason that still holds) and skips. The real
// netavark path runs in the podman 5 lane (integration/runtimes TestPodman5: Debian 13's
// netavark 1.14 with moor-netavark in its plugin directory), which make test runs.
func TestNetavarkRealBinary(t *testing.T) {
	if _, err := os.Stat(netavarkBinary); err != nil {
		t.Skipf("no netavark at %s (apt-get install netavark)", netavarkBinary)
	}
	help, _ := exec.Command(netavarkBinary, "--help").CombinedOutput()
	version, _ := exec.Command(netavarkBinary, "--version").CombinedOutput()
	w := newNVWorld(t)
	network, err := w.nv.create(w.network("nvreal", "mnv3", "10.235.0.0/24", true))
	if err != nil {
		t.Fatal(err)
	}
	cfgDir := t.TempDir()
	ctr := plugintestNetns(t)
	req := nvRequest{id: containerID(t), name: "real", ips: []string{"10.235.0.10"}}

	if !strings.Contains(string(help), "--plugin-directory") {
		out, errOut, err := w.runNetavark(netavarkRequest(network, req), "--config", cfgDir, "setup", ctr.Path())
		if err == nil || !strings.Contains(string(out)+string(errOut), "unknown network driver") {
			t.Fatalf("%s has no --plugin-directory, yet did not refuse driver moor-bridge as unknown: err %v, stdout %s, stderr %s", strings.TrimSpace(string(version)), err, out, errOut)
		}
		t.Skipf("%s cannot load external plugins (netavark 1.6 added them): the protocol driver nvDriver stands in for it", strings.TrimSpace(string(version)))
	}

	pluginDir := t.TempDir()
	if err := os.Symlink(filepath.Join(binDir, "moor-netavark"), filepath.Join(pluginDir, "moor-bridge")); err != nil {
		t.Fatal(err)
	}
	linksBefore := w.hostLinks()
	common := []string{"--config", cfgDir, "--plugin-directory", pluginDir}
	out, errOut, err := w.runNetavark(netavarkRequest(network, req), append(common, "setup", ctr.Path())...)
	if err != nil {
		t.Fatalf("netavark setup: %v\nstdout %s\nstderr %s", err, out, errOut)
	}
	var status map[string]nvStatus
	if err := json.Unmarshal(out, &status); err != nil {
		t.Fatalf("netavark setup printed %q: %v", out, err)
	}
	eth0 := status["nvreal"].Interfaces["eth0"]
	if len(eth0.Subnets) != 1 || eth0.Subnets[0].IPNet != "10.235.0.10/24" {
		t.Errorf("status %+v", status)
	}
	if err := ping(ctr, "10.235.0.1"); err != nil {
		t.Error(err)
	}
	wantA(t, ctr, "10.235.0.1", "real.dns.moor", "10.235.0.10")
	if out, errOut, err := w.runNetavark(netavarkRequest(network, req), append(common, "teardown", ctr.Path())...); err != nil {
		t.Fatalf("netavark teardown: %v\nstdout %s\nstderr %s", err, out, errOut)
	}
	w.gone(t, "nvreal", linksBefore)
}
