package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/moornet/moor/plugins"
)

// Bad input through the real binaries, as a runtime would pass it: identities that could
// escape a state directory or break a rule, configs beyond the stdin bound, and a wrong
// field per plugin. Each is refused with the right code, names what is wrong, and leaves
// no file and no link behind. (NUL bytes cannot travel in an environment variable: the
// in-process harness covers them, plugins TestHostileIdentityRefused; every field of
// every plugin: TestBridgeFieldsRefused, TestDNSFieldsRefused, TestHostFieldsRefused and
// ipam/config TestErrorsNameFieldAndValue, TestIPAMFieldsRefused.)

// inputPlugins are the binaries and a valid config of each, built around dir.
func inputPlugins(dir string) map[string]map[string]any {
	ipam := map[string]any{"type": "moor-ipam", "subnet": "10.237.0.0/24", "dataDir": filepath.Join(dir, "ipam")}
	return map[string]map[string]any{
		"moor-bridge": {"type": "moor-bridge", "bridge": "minput0", "isGateway": true, "ipam": ipam},
		"moor-ipam":   {"type": "moor-ipam", "ipam": ipam},
		"moor-dns": {"type": "moor-dns", "storeDir": filepath.Join(dir, "records"), "controlSocket": filepath.Join(dir, "dns.sock"),
			"pidFile": filepath.Join(dir, "dns.pid")},
		"moor-host": {"type": "moor-host"},
		"moor-none": {"type": "moor-none"},
	}
}

// execPlugin runs a plugin binary in netns with the CNI environment env and stdin, and
// returns its CNI error (nil when it succeeded).
func execPlugin(t *testing.T, netns ns.NetNS, binary string, env map[string]string, stdin []byte) *types.Error {
	t.Helper()
	var stdout, stderr bytes.Buffer
	var runErr error
	err := netns.Do(func(ns.NetNS) error {
		cmd := exec.Command(filepath.Join(binDir, binary))
		cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "MOOR_LOG_FILE=stderr", "CNI_PATH=" + binDir}
		for k, v := range env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(stdin), &stdout, &stderr
		runErr = cmd.Run()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if runErr == nil {
		return nil
	}
	var e types.Error
	if err := json.Unmarshal(stdout.Bytes(), &e); err != nil || e.Code == 0 {
		t.Fatalf("%s failed without a CNI error (%v): stdout %q stderr %q", binary, runErr, stdout.String(), stderr.String())
	}
	return &e
}

func TestReliabilityHostileInputRefused(t *testing.T) {
	w := newWorld(t, "")
	dir := t.TempDir()
	ctr := plugintestNetns(t)
	linksBefore := w.hostLinks()
	overlong := strings.Repeat("a", 300)
	type input struct {
		name      string
		id, iface string
		netName   string
		stdin     []byte // replaces the config when set
		code      uint
		mentions  string
	}
	inputs := []input{
		{name: "container ID ../x", id: "../x", code: 4, mentions: "CNI_CONTAINERID"},
		{name: "container ID a/b", id: "a/b", code: 4, mentions: "CNI_CONTAINERID"},
		{name: "container ID with a space", id: "a b", code: 4, mentions: "CNI_CONTAINERID"},
		{name: "overlong container ID", id: overlong, code: 4, mentions: "CNI_CONTAINERID"},
		{name: "ifname ..", iface: "..", code: 4, mentions: "CNI_IFNAME"},
		{name: "ifname ../x", iface: "../x", code: 4, mentions: "CNI_IFNAME"},
		{name: "ifname with a space", iface: "eth 0", code: 4, mentions: "CNI_IFNAME"},
		{name: "overlong ifname", iface: "eth0123456789abc", code: 4, mentions: "CNI_IFNAME"},
		{name: "network ../x", netName: "../x", code: 7, mentions: "name"},
		{name: "network a/b", netName: "a/b", code: 7, mentions: "name"},
		{name: "network with NUL", netName: "a\x00b", code: 7, mentions: "name"},
		{name: "network with a space", netName: "a b", code: 7, mentions: "name"},
		{name: "overlong network", netName: overlong, code: 7, mentions: "name"},
		{name: "stdin over the bound", stdin: bytes.Repeat([]byte(" "), plugins.MaxStdin+1), code: 5, mentions: "larger than"},
	}
	for binary, conf := range inputPlugins(dir) {
		for _, in := range inputs {
			t.Run(binary+"/"+in.name, func(t *testing.T) {
				c := map[string]any{"cniVersion": "1.1.0", "name": "inputnet"}
				for k, v := range conf {
					c[k] = v
				}
				if in.netName != "" {
					c["name"] = in.netName
				}
				stdin, _ := json.Marshal(c)
				if in.stdin != nil {
					stdin = append(stdin, in.stdin...) // valid JSON followed by blanks
				}
				env := map[string]string{"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "ctr1", "CNI_NETNS": ctr.Path(), "CNI_IFNAME": "eth0"}
				if in.id != "" {
					env["CNI_CONTAINERID"] = in.id
				}
				if in.iface != "" {
					env["CNI_IFNAME"] = in.iface
				}
				e := execPlugin(t, w.host, binary, env, stdin)
				if e == nil || e.Code != in.code || !strings.Contains(e.Msg, in.mentions) {
					t.Fatalf("got %v, want code %d naming %q", e, in.code, in.mentions)
				}
			})
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("refused calls left files in %s: %v", dir, names)
	}
	if after := w.hostLinks(); fmt.Sprint(after) != fmt.Sprint(linksBefore) {
		t.Errorf("refused calls changed the host's links: %v -> %v", linksBefore, after)
	}
	if links := netnsLinks(t, ctr); strings.Join(links, ",") != "lo" {
		t.Errorf("refused calls left %v in the container", links)
	}
}

// A wrong field of each plugin through its binary: code 7 naming the field, nothing made.
func TestReliabilityBadFieldPerPlugin(t *testing.T) {
	w := newWorld(t, "")
	dir := t.TempDir()
	ctr := plugintestNetns(t)
	bad := map[string]struct {
		field string
		value any
	}{
		"moor-bridge": {"mtu", "big"},
		"moor-ipam":   {"ipam", map[string]any{"type": "moor-ipam", "subnet": 5}},
		"moor-dns":    {"port", 0},
		"moor-host":   {"device", []string{"eth0"}},
		"moor-none":   {"capabilities", "all"},
	}
	for binary, conf := range inputPlugins(dir) {
		c := map[string]any{"cniVersion": "1.1.0", "name": "badfield"}
		for k, v := range conf {
			c[k] = v
		}
		c[bad[binary].field] = bad[binary].value
		stdin, _ := json.Marshal(c)
		env := map[string]string{"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "ctr1", "CNI_NETNS": ctr.Path(), "CNI_IFNAME": "eth0"}
		e := execPlugin(t, w.host, binary, env, stdin)
		if e == nil || e.Code != 7 || !strings.Contains(e.Msg, bad[binary].field) {
			t.Errorf("%s with %s = %v: got %v, want code 7 naming the field", binary, bad[binary].field, bad[binary].value, e)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("refused configs left files in %s: %v", dir, entries)
	}
}
