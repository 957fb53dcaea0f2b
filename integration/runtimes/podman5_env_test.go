package runtimes

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moornet/moor/dns/server"
)

// Podman 5 runs in a Debian 13 root file system that scripts/podman5-root.sh makes once
// per machine (Debian 12 has podman 4.3 and netavark 1.4, which predates external
// plugins). Each scenario gets a holder: a process in a private mount namespace whose
// root is that file system (pivot_root, so that runc's own pivot_root and `podman exec`
// see the container's root, which they do not under chroot), with tmpfs on /run, /tmp
// and the directories podman writes whatever it is told, the scenario's directory bound
// at /opt/moor and moor's binaries at /opt/moor/bin. Every podman command of the scenario
// runs in that namespace (nsenter): a netns that podman mounts under /run/netns exists
// only there, so a scenario must not span two namespaces. The network namespace is the
// machine's, as for the podman 4 scenario.
//
// At the end the scenario's containers and networks are removed with podman, the daemons
// the networks started (moor-dns, aardvark-dns) are stopped by PID, any other process
// left in the namespace is reported and killed by PID, and the holder is killed: the
// namespace and its mounts go with it. netavark's own nftables table, which netavark
// leaves behind, is deleted when it did not exist before.

const (
	// envPodman5Root names the root file system (scripts/test.sh sets it); envPodman5Skip
	// carries scripts/test.sh's reason for skipping the lane.
	envPodman5Root = "MOOR_PODMAN5_ROOT"
	envPodman5Skip = "MOOR_PODMAN5_SKIP"
	// rootScriptUnreachable is podman5-root.sh's exit status when the archive is unreachable.
	rootScriptUnreachable = 3
	p5Dir                 = "/opt/moor" // the scenario's directory, inside the root
	p5Path                = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	holderReady           = "ready"
	holderStart           = 30 * time.Second
	netavarkTable         = "netavark" // netavark's nftables table (family inet)
)

// holderScript runs as `sh -c holderScript sh ROOT DIR BIN` in a new private mount
// namespace; it prints holderReady and sleeps until killed.
const holderScript = `set -e
R=$1 W=$2 B=$3
mount --bind "$R" "$R"
mount -t proc proc "$R/proc"
mount --rbind /sys "$R/sys"
mount --rbind /dev "$R/dev"
for d in run tmp var/tmp var/log var/lib/containers; do
	mkdir -p "$R/$d"
	mount -t tmpfs -o mode=0755 tmpfs "$R/$d"
done
mount --bind "$W" "$R` + p5Dir + `"
mount --bind "$B" "$R` + p5Dir + `/bin"
mkdir "$R/run/oldroot"
cd "$R"
pivot_root . run/oldroot
exec /bin/sh -c 'umount -l /run/oldroot && rmdir /run/oldroot && echo ` + holderReady + ` && exec sleep infinity'
`

var podman5Root struct {
	once sync.Once
	path string
	skip string
	err  error
}

// trixieRoot returns the root file system: $MOOR_PODMAN5_ROOT, else what
// scripts/podman5-root.sh makes or finds. It skips the test, naming the cause, when the
// archive cannot be reached (scripts/test.sh says so in its own output too).
func trixieRoot(t *testing.T) string {
	t.Helper()
	r := &podman5Root
	r.once.Do(func() {
		if reason := os.Getenv(envPodman5Skip); reason != "" {
			r.skip = reason
			return
		}
		if p := os.Getenv(envPodman5Root); p != "" {
			r.path = p
			return
		}
		cmd := exec.Command("bash", filepath.Join("..", "..", "scripts", "podman5-root.sh"))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		var exit *exec.ExitError
		switch {
		case errors.As(err, &exit) && exit.ExitCode() == rootScriptUnreachable:
			r.skip = strings.TrimSpace(stderr.String())
		case err != nil:
			r.err = fmt.Errorf("scripts/podman5-root.sh: %w\n%s", err, stderr.String())
		default:
			r.path = strings.TrimSpace(string(out))
		}
	})
	if r.skip != "" {
		t.Skipf("no Debian 13 root for podman 5: %s", r.skip)
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.path
}

// podman5 is one scenario's podman 5.
type podman5 struct {
	t      *testing.T
	dir    string // the scenario's directory on the host (p5Dir inside)
	holder *exec.Cmd
	mntns  string
	env    []string
}

// newPodman5 starts a holder, writes podman's configuration (docs/runtimes.md's podman 5
// settings), links moor-netavark into a plugin directory under the driver names it
// serves, and imports the busybox image. Everything is undone when the test ends.
func newPodman5(t *testing.T) *podman5 {
	t.Helper()
	needSuite(t)
	root := trixieRoot(t)
	p := &podman5{t: t, dir: t.TempDir()}
	for _, d := range []string{"bin", "plugins", "networks", "graph", "run", "tmp"} {
		if err := os.MkdirAll(filepath.Join(p.dir, d), dirMode); err != nil {
			t.Fatal(err)
		}
	}
	for _, driver := range []string{"moor-bridge", "moor-macvlan"} {
		if err := os.Symlink(p5Dir+"/bin/moor-netavark", filepath.Join(p.dir, "plugins", driver)); err != nil {
			t.Fatal(err)
		}
	}
	nofile, nproc, err := ulimits()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"containers.conf": fmt.Sprintf(`[containers]
default_ulimits = ["nofile=%d:%d", "nproc=%d:%d"]

[network]
network_backend = "netavark"
netavark_plugin_dirs = ["%[5]s/plugins"]
network_config_dir = "%[5]s/networks"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "%[5]s/events.log"
tmp_dir = "%[5]s/tmp"
helper_binaries_dir = ["%[5]s/helpers", "/usr/lib/podman"]
`, nofile, nofile, nproc, nproc, p5Dir),
		"storage.conf": fmt.Sprintf("[storage]\ndriver = \"vfs\"\ngraphroot = \"%[1]s/graph\"\nrunroot = \"%[1]s/run\"\n", p5Dir),
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(p.dir, name), []byte(body), fileMode); err != nil {
			t.Fatal(err)
		}
	}
	if err := copyFile(suite.rootfsTar, filepath.Join(p.dir, "busybox.tar"), fileMode); err != nil {
		t.Fatal(err)
	}
	p.env = []string{
		"PATH=" + p5Path, "HOME=/root", "PODMAN_IGNORE_CGROUPSV1_WARNING=1",
		"CONTAINERS_CONF=" + p5Dir + "/containers.conf",
		"CONTAINERS_STORAGE_CONF=" + p5Dir + "/storage.conf",
		// network_config_dir is not podman's default: moor-netavark's create must read it
		// to pick subnets no other network has (netavark passes podman's environment on).
		"MOOR_NETAVARK_NETWORK_DIR=" + p5Dir + "/networks",
	}
	nftBefore := nftTableExists(netavarkTable)
	t.Cleanup(func() {
		if !nftBefore && nftTableExists(netavarkTable) {
			if out, err := exec.Command("nft", "delete", "table", "inet", netavarkTable).CombinedOutput(); err != nil {
				t.Errorf("deleting netavark's nftables table: %v %s", err, out)
			}
		}
	})
	p.startHolder(root)
	t.Cleanup(p.stop)
	if _, err := p.run("import", p5Dir+"/busybox.tar", busyboxImage); err != nil {
		t.Fatalf("podman 5 cannot import an image here: %v", err)
	}
	return p
}

// startHolder starts the holder and waits until it is ready.
func (p *podman5) startHolder(root string) {
	p.t.Helper()
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", holderScript, "sh", root, p.dir, suite.binDir)
	// The holder dies with the test binary, whatever happens to the test.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		p.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("starting the holder: %v", err)
	}
	p.holder = cmd
	ready := make(chan bool, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		ready <- strings.TrimSpace(line) == holderReady
	}()
	select {
	case ok := <-ready:
		if !ok {
			p.killHolder()
			p.t.Fatalf("the holder did not start: %s", stderr.String())
		}
	case <-time.After(holderStart):
		p.killHolder()
		p.t.Fatalf("the holder was not ready after %s: %s", holderStart, stderr.String())
	}
	if p.mntns, err = os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", cmd.Process.Pid)); err != nil {
		p.killHolder()
		p.t.Fatal(err)
	}
}

func (p *podman5) killHolder() {
	_ = p.holder.Process.Kill()
	_ = p.holder.Wait()
}

// inside returns the host path of path inside the holder's namespace.
func (p *podman5) inside(path string) string {
	return filepath.Join(fmt.Sprintf("/proc/%d/root", p.holder.Process.Pid), path)
}

// exec runs a program of the root in the holder's namespace.
func (p *podman5) exec(name string, args ...string) (string, error) {
	ns := []string{"--target", strconv.Itoa(p.holder.Process.Pid), "--mount", "--root", "--wd", "--", "env", "-i"}
	ns = append(ns, p.env...)
	out, err := command(nil, "nsenter", append(append(ns, name), args...)...)
	return strings.TrimSpace(out), err
}

func (p *podman5) run(args ...string) (string, error) { return p.exec("podman", args...) }

func (p *podman5) must(args ...string) string {
	p.t.Helper()
	out, err := p.run(args...)
	if err != nil {
		p.t.Fatal(err)
	}
	return out
}

// stop removes every container and network, stops the networks' daemons, kills what
// else is left in the namespace (an error: nothing should be), then the holder.
func (p *podman5) stop() {
	t := p.t
	if _, err := p.run("rm", "--all", "--force", "--time", "0"); err != nil {
		t.Errorf("removing podman's containers: %v", err)
	}
	if out, err := p.run("network", "ls", "--format", "{{.Name}}"); err == nil {
		for _, n := range strings.Fields(out) {
			if n == "podman" {
				continue
			}
			if _, err := p.run("network", "rm", "--force", n); err != nil {
				t.Errorf("removing network %s: %v", n, err)
			}
		}
	}
	pidFile := p.inside("/run/moor/dns.pid")
	sidecar, running := server.Running(pidFile)
	if err := stopSidecar(pidFile); err != nil {
		t.Error(err)
	}
	if running {
		// The sidecar lets go of its pid file before it has finished exiting.
		waitExit(sidecar)
	}
	daemons := map[string]bool{"aardvark-dns": true}
	for _, pid := range p.processes() {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		name := strings.TrimSpace(string(comm))
		if !daemons[name] {
			t.Errorf("process %d (%s) left running in podman's namespace; killing it", pid, name)
		}
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	p.killHolder()
}

// waitExit waits up to sidecarStop for process pid to be gone, then kills it.
func waitExit(pid int) {
	deadline := time.Now().Add(sidecarStop)
	for time.Now().Before(deadline) {
		if syscall.Kill(pid, 0) != nil {
			return
		}
		time.Sleep(pollInterval)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
}

// processes lists the processes in the holder's mount namespace, but the holder.
func (p *podman5) processes() []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == p.holder.Process.Pid {
			continue
		}
		if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid)); err == nil && ns == p.mntns {
			out = append(out, pid)
		}
	}
	return out
}

// nftTableExists reports whether the host has the nftables table inet name.
func nftTableExists(name string) bool {
	return exec.Command("nft", "list", "table", "inet", name).Run() == nil
}
