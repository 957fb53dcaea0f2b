package plugin

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// call runs Main with the given arguments, stdin and environment.
func call(t *testing.T, env map[string]string, stdin string, args ...string) (int, string) {
	t.Helper()
	var out bytes.Buffer
	code := Main(Stdio{Args: args, Stdin: strings.NewReader(stdin), Stdout: &out, Getenv: func(k string) string { return env[k] }, Exe: "/x/moor-netavark"})
	return code, out.String()
}

// wantError checks the error object: exit status 1, exactly {"error": "..."}, naming mentions.
func wantError(t *testing.T, code int, out, mentions string) {
	t.Helper()
	if code != 1 {
		t.Fatalf("exit %d, want 1 (stdout %q)", code, out)
	}
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields() // as podman decodes it
	var e struct {
		Error string `json:"error"`
	}
	if err := dec.Decode(&e); err != nil {
		t.Fatalf("stdout %q is not an error object: %v", out, err)
	}
	if !strings.Contains(e.Error, mentions) {
		t.Errorf("error %q does not mention %q", e.Error, mentions)
	}
}

func TestInfo(t *testing.T) {
	for _, args := range [][]string{{"info"}, nil} {
		code, out := call(t, nil, "", args...)
		var info map[string]string
		if code != 0 || json.Unmarshal([]byte(out), &info) != nil {
			t.Fatalf("info %v: exit %d, %q", args, code, out)
		}
		if info["api_version"] != "1.0.0" || info["version"] == "" || info["description"] == "" || !strings.Contains(info["about"], "moor-netavark: moor ") {
			t.Errorf("info %v: %v", args, info)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	code, out := call(t, nil, "", "update")
	wantError(t, code, out, `unknown command "update"`)
	code, out = call(t, nil, "{}", "setup")
	wantError(t, code, out, "network namespace path")
	code, out = call(t, nil, "{}", "teardown", "/a", "/b")
	wantError(t, code, out, "network namespace path")
	code, out = call(t, nil, "not json", "setup", "/run/netns/x")
	wantError(t, code, out, "not the JSON netavark sends")
	code, out = call(t, nil, `{"container_id":"c","container_name":"n","network":{"name":"n","id":"1","driver":"macvlan","ipv6_enabled":false,"internal":false,"dns_enabled":false},"network_options":{"interface_name":"eth0"}}`, "setup", "/run/netns/x")
	wantError(t, code, out, `driver "macvlan"`)
}

func TestCreateRefusesBadSubnet(t *testing.T) {
	code, out := call(t, nil, `{"name":"n","id":"1","driver":"moor-bridge","subnets":[{"subnet":"10.0.0.0/33"}],"ipv6_enabled":false,"internal":false,"dns_enabled":false}`, "create")
	wantError(t, code, out, "10.0.0.0/33")
}

func TestConfigFromEnv(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "moor-netavark")
	if err := os.WriteFile(exe, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "moor-bridge")
	if err := os.Symlink(exe, link); err != nil {
		t.Fatal(err)
	}
	c := ConfigFromEnv(func(string) string { return "" }, link)
	want := Config{CNIPath: []string{dir, DefaultCNIDir}, StateDir: "/run/moor/netavark", DNSDir: "/run/moor/dns", DNSSocket: "/run/moor/dns.sock", NetworkDir: DefaultNetworkDir}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("defaults (called through a link): %+v, want %+v", c, want)
	}
	env := map[string]string{EnvCNIPath: "/a:/b", EnvRunDir: "/tmp/r", EnvNetworkDir: "/tmp/n"}
	c = ConfigFromEnv(func(k string) string { return env[k] }, link)
	want = Config{CNIPath: []string{"/a", "/b"}, StateDir: "/tmp/r/netavark", DNSDir: "/tmp/r/dns", DNSSocket: "/tmp/r/dns.sock", NetworkDir: "/tmp/n"}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("from the environment: %+v, want %+v", c, want)
	}
	if got := c.lockFile("web"); got != "/tmp/r/netavark/locks/web.lock" {
		t.Errorf("lock file %s", got)
	}
}

func TestPodmanSubnets(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"podman.json": `{"name":"podman","id":"a","driver":"bridge","subnets":[{"subnet":"10.88.0.0/16","gateway":"10.88.0.1"}]}`,
		"web.json":    `{"name":"web","id":"b","driver":"moor-bridge","subnets":[{"subnet":"10.89.0.0/24"}]}`,
		"broken.json": `{"name":`,
		"notes.txt":   `{"name":"x","subnets":[{"subnet":"10.1.0.0/16"}]}`,
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	taken, err := podmanSubnets(dir, "web")
	if err != nil {
		t.Fatal(err)
	}
	if len(taken) != 1 || taken[0].Prefix.String() != "10.88.0.0/16" || !strings.Contains(taken[0].Owner, "podman") {
		t.Errorf("taken %+v: want only podman's own network (web is the one being created)", taken)
	}
	if taken, err := podmanSubnets(filepath.Join(dir, "missing"), "web"); err != nil || len(taken) != 0 {
		t.Errorf("missing dir: %v %v", taken, err)
	}
}
