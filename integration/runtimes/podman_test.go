package runtimes

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// Podman scenario: podman 4.3 with its CNI backend pointed at moor's binaries and at a
// config dir holding a moor conflist; every podman state path is in the test's
// directory (containers.conf through CONTAINERS_CONF, storage.conf through
// CONTAINERS_STORAGE_CONF), so the machine's podman state is untouched.

// pidMaxPath caps RLIMIT_NPROC: podman lowers its own limit to it, and runc cannot give
// a container more than its parent has.
const (
	pidMaxPath = "/proc/sys/kernel/pid_max"
	webPort    = 8080 // where busybox httpd listens inside the containers
)

type podman struct {
	t      *testing.T
	bin    string
	netDir string
	env    []string
}

// newPodman writes the configuration (see docs/runtimes.md for the knobs), imports the
// busybox image, and removes every container when the test ends.
func newPodman(t *testing.T) *podman {
	t.Helper()
	p := &podman{t: t, bin: tool(t, "podman")}
	tool(t, "conmon")
	tool(t, "runc")
	dir := t.TempDir()
	p.netDir = filepath.Join(dir, "net.d")
	if err := os.MkdirAll(p.netDir, dirMode); err != nil {
		t.Fatal(err)
	}
	nofile, nproc, err := ulimits()
	if err != nil {
		t.Fatal(err)
	}
	containersConf := fmt.Sprintf(`[containers]
default_ulimits = ["nofile=%d:%d", "nproc=%d:%d"]

[network]
network_backend = "cni"
cni_plugin_dirs = [%q]
network_config_dir = %q

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
lock_type = "file"
events_logger = "file"
events_logfile_path = %q
tmp_dir = %q
`, nofile, nofile, nproc, nproc, suite.binDir, p.netDir, filepath.Join(dir, "events.log"), filepath.Join(dir, "tmp"))
	storageConf := fmt.Sprintf(`[storage]
driver = "vfs"
graphroot = %q
runroot = %q
`, filepath.Join(dir, "graph"), filepath.Join(dir, "run"))
	files := map[string]string{"containers.conf": containersConf, "storage.conf": storageConf}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), fileMode); err != nil {
			t.Fatal(err)
		}
	}
	p.env = []string{
		"CONTAINERS_CONF=" + filepath.Join(dir, "containers.conf"),
		"CONTAINERS_STORAGE_CONF=" + filepath.Join(dir, "storage.conf"),
	}
	if _, err := p.run("import", suite.rootfsTar, busyboxImage); err != nil {
		t.Skipf("podman cannot import an image here: %v", err)
	}
	t.Cleanup(func() {
		if _, err := p.run("rm", "--all", "--force", "--time", "0"); err != nil {
			t.Errorf("removing podman's containers: %v", err)
		}
	})
	return p
}

// ulimits returns the limits podman gives containers: the host's hard limits, since
// root here lacks CAP_SYS_RESOURCE and runc cannot raise them (podman's default asks
// for 1048576 files and 4194304 processes).
func ulimits() (nofile, nproc uint64, err error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, 0, err
	}
	nofile = rl.Max
	const rlimitNproc = 6 // RLIMIT_NPROC, which package syscall does not name
	if err := syscall.Getrlimit(rlimitNproc, &rl); err != nil {
		return 0, 0, err
	}
	nproc = rl.Max
	data, err := os.ReadFile(pidMaxPath)
	if err != nil {
		return 0, 0, err
	}
	var pidMax uint64
	if _, err := fmt.Sscan(strings.TrimSpace(string(data)), &pidMax); err == nil && pidMax < nproc {
		nproc = pidMax
	}
	return nofile, nproc, nil
}

func (p *podman) run(args ...string) (string, error) {
	out, err := command(p.env, p.bin, args...)
	return strings.TrimSpace(out), err
}

func (p *podman) must(args ...string) string {
	p.t.Helper()
	out, err := p.run(args...)
	if err != nil {
		p.t.Fatal(err)
	}
	return out
}

// startContainer runs a detached container on network n with the gateway as its DNS
// server and moor's domain as its search domain (podman writes the gateway into
// resolv.conf only for dnsname networks).
func (p *podman) startContainer(n *moorNet, name string, extra []string, cmd ...string) {
	p.t.Helper()
	args := []string{"run", "--detach", "--name", name, "--network", n.Name, "--dns", n.Gateway.String(), "--dns-search", dnsDomain}
	args = append(args, extra...)
	args = append(args, busyboxImage)
	p.must(append(args, cmd...)...)
}

// inspect returns one field of a container, as a Go template of podman inspect.
func (p *podman) inspect(name, format string) string {
	p.t.Helper()
	return p.must("inspect", "--format", format, name)
}

// podmanCLI runs podman commands (podman 4 on the machine, podman 5 in its root).
type podmanCLI interface {
	run(args ...string) (string, error)
}

// wantReach checks, from inside containers web (at webIP, serving the image's page) and
// db: db's resolv.conf names the gateway and domain; each pings the other by address and
// by name (with the domain too); db fetches web's page by name.
func wantReach(t *testing.T, p podmanCLI, gateway, domain, webIP string) {
	t.Helper()
	resolv, err := p.run("exec", "db", "cat", "/etc/resolv.conf")
	if err != nil || !strings.Contains(resolv, "nameserver "+gateway) || !strings.Contains(resolv, "search "+domain) {
		t.Errorf("db's resolv.conf does not name the gateway and %s (%v):\n%s", domain, err, resolv)
	}
	for _, c := range []struct{ from, to string }{{"db", webIP}, {"db", "web"}, {"web", "db"}, {"web", "db." + domain}} {
		if out, err := p.run("exec", c.from, "ping", "-c", "1", "-W", "2", c.to); err != nil {
			t.Errorf("%s cannot ping %s: %v %s", c.from, c.to, err, out)
		}
	}
	if body, err := p.run("exec", "db", "wget", "-q", "-O", "-", fmt.Sprintf("http://web:%d/index.html", webPort)); err != nil || body+"\n" != indexBody {
		t.Errorf("db fetching http://web:%d: %q %v", webPort, body, err)
	}
}

func TestPodman(t *testing.T) {
	watchHost(t)
	n := newMoorNet(t)
	p := newPodman(t)
	n.write(p.netDir, n.Name+".conflist")

	// podman network ls/inspect see a conflist dropped into network_config_dir.
	if ls := p.must("network", "ls", "--format", "{{.Name}} {{.Driver}}"); !strings.Contains(ls, n.Name+" moor-bridge") {
		t.Fatalf("podman network ls does not list %s as a moor-bridge network:\n%s", n.Name, ls)
	}
	var inspected []struct {
		Name   string `json:"name"`
		Driver string `json:"driver"`
	}
	if err := json.Unmarshal([]byte(p.must("network", "inspect", n.Name)), &inspected); err != nil || len(inspected) != 1 || inspected[0].Name != n.Name || inspected[0].Driver != "moor-bridge" {
		t.Fatalf("podman network inspect %s: %+v (%v)", n.Name, inspected, err)
	}

	port := freePort(t)
	p.startContainer(n, "web", []string{"--publish", fmt.Sprintf("%d:%d", port, webPort)}, "httpd", "-f", "-p", fmt.Sprint(webPort), "-h", "/www")
	p.startContainer(n, "db", nil, "sleep", "600")
	ipOf := func(name string) string {
		return p.inspect(name, fmt.Sprintf(`{{(index .NetworkSettings.Networks %q).IPAddress}}`, n.Name))
	}
	webIP, dbIP := ipOf("web"), ipOf("db")
	n.inSubnet("web", webIP)
	n.inSubnet("db", dbIP)
	webNS, dbNS := p.inspect("web", "{{.NetworkSettings.SandboxKey}}"), p.inspect("db", "{{.NetworkSettings.SandboxKey}}")

	wantReach(t, p, n.Gateway.String(), dnsDomain, webIP)
	wantName(t, dbNS, n.Gateway.String(), "web", webIP)
	wantName(t, dbNS, n.Gateway.String(), "web."+dnsDomain, webIP)
	wantName(t, webNS, n.Gateway.String(), "db", dbIP)
	wantNoName(t, webNS, n.Gateway.String(), "nosuch."+dnsDomain)

	// -p publishes the port on the host's addresses (the gateway's among them); the host's
	// loopback only with hostIP 127.0.0.1 or the network's publishLoopback.
	wantServed(t, hostPort(n.Gateway.String(), port))

	// podman rm runs DEL: no veth, reservation, record, rule, cache entry or netns left.
	p.must("rm", "--force", "--time", "0", "web", "db")
	n.noAttachments("podman rm")
	for _, path := range []string{webNS, dbNS} {
		if fileExists(path) {
			t.Errorf("netns %s left after podman rm", path)
		}
	}
}
