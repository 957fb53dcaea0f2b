package runtimes

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// containerd, shared by the CRI and ctr scenarios: started once, by the first scenario
// that needs it, as this package's own process with its root, state, sockets and config
// in a temp dir; TestMain stops it (by PID) after the last test.

const (
	criNamespace   = "k8s.io" // containerd's namespace for CRI pods and their images
	ctrNamespace   = "moorrt" // this package's namespace for `ctr run`
	startTimeout   = 20 * time.Second
	stopTimeout    = 10 * time.Second
	containerdConf = `version = 2
root = %[1]q
state = %[2]q
# Snapshotters this host cannot use; they only log errors.
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[5]q
  # root without CAP_SYS_RESOURCE cannot lower a process's oom_score_adj
  restrict_oom_score_adj = true
  # pod netns under this containerd's state dir, not /var/run/netns
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[6]q
    conf_dir = %[7]q
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = %[8]q
`
	crictlConf = "runtime-endpoint: unix://%[1]s\nimage-endpoint: unix://%[1]s\ntimeout: 30\n"
)

// containerdProc is the running containerd.
type containerdProc struct {
	dir      string
	sock     string
	confDir  string // CRI's CNI conf_dir
	runcRoot string
	log      string
	ctr      string
	crictl   string // "" when crictl is not installed
	cmd      *exec.Cmd
	exited   chan error // receives cmd's exit
}

var shared struct {
	once sync.Once
	c    *containerdProc
	err  error
}

// sharedContainerd returns the package's containerd, starting it on first use; the test
// is skipped, with the reason, when containerd cannot start here.
func sharedContainerd(t *testing.T) *containerdProc {
	t.Helper()
	bin := tool(t, "containerd")
	ctr := tool(t, "ctr")
	tool(t, "containerd-shim-runc-v2")
	tool(t, "runc")
	shared.once.Do(func() { shared.c, shared.err = startContainerd(bin, ctr) })
	if shared.err != nil {
		t.Skipf("containerd does not start here: %v", shared.err)
	}
	return shared.c
}

func startContainerd(bin, ctr string) (*containerdProc, error) {
	dir, err := os.MkdirTemp("", "moor-containerd-")
	if err != nil {
		return nil, err
	}
	c := &containerdProc{
		dir:      dir,
		sock:     filepath.Join(dir, "containerd.sock"),
		confDir:  filepath.Join(dir, "net.d"),
		runcRoot: filepath.Join(dir, "runc"),
		log:      filepath.Join(dir, "containerd.log"),
		ctr:      ctr,
	}
	c.crictl = lookTool("crictl")
	if err := os.MkdirAll(c.confDir, dirMode); err != nil {
		return nil, err
	}
	conf := fmt.Sprintf(containerdConf, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.sock, c.sock+".ttrpc",
		pauseImage, suite.binDir, c.confDir, c.runcRoot)
	files := map[string]string{
		"config.toml": conf,
		"crictl.yaml": fmt.Sprintf(crictlConf, c.sock),
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), fileMode); err != nil {
			return nil, err
		}
	}
	logFile, err := os.Create(c.log)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	c.cmd = exec.Command(bin, "--config", filepath.Join(dir, "config.toml"))
	c.cmd.Stdout, c.cmd.Stderr = logFile, logFile
	if err := c.cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- c.cmd.Wait() }()
	deadline := time.Now().Add(startTimeout)
	for {
		if _, err := c.ctrCmd(criNamespace, "version"); err == nil {
			break
		}
		select {
		case err := <-exited:
			c.cmd = nil
			return nil, fmt.Errorf("containerd exited (%v); its log:\n%s", err, c.logTail())
		default:
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("containerd did not answer on %s within %s; its log:\n%s", c.sock, startTimeout, c.logTail())
		}
		time.Sleep(pollInterval)
	}
	// Wait for the exit in the background from now on: stop() reads the channel.
	c.exited = exited
	for _, imp := range []struct{ ns, archive string }{{criNamespace, suite.pauseOCI}, {criNamespace, suite.busyboxOCI}, {ctrNamespace, suite.busyboxOCI}} {
		if _, err := c.ctrCmd(imp.ns, "images", "import", imp.archive); err != nil {
			return c, fmt.Errorf("importing %s: %w", imp.archive, err)
		}
	}
	return c, nil
}

// ctrCmd runs ctr against this containerd in a namespace.
func (c *containerdProc) ctrCmd(ns string, args ...string) (string, error) {
	return command(nil, c.ctr, append([]string{"--address", c.sock, "--namespace", ns}, args...)...)
}

// crictlCmd runs crictl against this containerd's CRI.
func (c *containerdProc) crictlCmd(args ...string) (string, error) {
	out, err := command(nil, c.crictl, append([]string{"--config", filepath.Join(c.dir, "crictl.yaml")}, args...)...)
	return strings.TrimSpace(out), err
}

// logTail returns the last lines of containerd's log.
func (c *containerdProc) logTail() string {
	data, _ := os.ReadFile(c.log)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	const tail = 20
	if len(lines) > tail {
		lines = lines[len(lines)-tail:]
	}
	return strings.Join(lines, "\n")
}

// logCount counts the lines of containerd's log that contain every one of parts.
func (c *containerdProc) logCount(parts ...string) int {
	data, _ := os.ReadFile(c.log)
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(sc.Text(), p)
		}
		if ok {
			n++
		}
	}
	return n
}

// stopContainerd stops the shared containerd if a test started it: pods removed, then
// SIGTERM (SIGKILL after stopTimeout), the shims it started killed by PID, leftover
// mounts under its directory unmounted, the directory removed.
func stopContainerd() error {
	c := shared.c
	if c == nil {
		return nil
	}
	if c.crictl != "" && c.cmd != nil {
		_, _ = c.crictlCmd("rmp", "--all", "--force")
	}
	var errs []string
	if c.cmd != nil {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.exited:
		case <-time.After(stopTimeout):
			_ = c.cmd.Process.Kill()
			<-c.exited
			errs = append(errs, fmt.Sprintf("containerd ignored SIGTERM for %s; killed", stopTimeout))
		}
	}
	for _, pid := range shimsOf(c.sock) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		errs = append(errs, fmt.Sprintf("killed shim %d left running", pid))
	}
	for _, m := range mountsUnder(c.dir) {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil {
			errs = append(errs, fmt.Sprintf("unmounting %s: %v", m, err))
		}
	}
	if err := os.RemoveAll(c.dir); err != nil {
		errs = append(errs, err.Error())
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// shimsOf lists the PIDs of the shims serving the containerd at sock.
func shimsOf(sock string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(cmdline), "\x00")
		if len(args) == 0 || !strings.HasPrefix(filepath.Base(args[0]), "containerd-shim") {
			continue
		}
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "-address" && args[i+1] == sock {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// mountsUnder lists the mount points below dir, deepest first.
func mountsUnder(dir string) []string {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		const mountPointField = 4
		if len(f) > mountPointField && strings.HasPrefix(f[mountPointField], dir+"/") {
			out = append(out, f[mountPointField])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(out)))
	return out
}
