package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/dns/records"
)

// Environment of the child process of TestDropPrivileges.
const (
	childEnv    = "MOOR_DNS_CAPDROP_CHILD" // the parent's directory: store, socket
	childTest   = "TestDropPrivilegesChild"
	childMarker = "MOOR-CHILD-REPORT "
	privPortDNS = 53 // a privileged port: binding it needs CAP_NET_BIND_SERVICE
)

// capReport is what the child found about itself after the drop.
type capReport struct {
	CgoRefused    bool     `json:"cgoRefused"`
	SelfAnswer    []string `json:"selfAnswer"`    // its own network's name, asked after the drop
	ExecErr       string   `json:"execErr"`       // running /bin/true
	ShadowErr     string   `json:"shadowErr"`     // opening /etc/shadow
	StoreWriteErr string   `json:"storeWriteErr"` // creating a file in the record store
	Err           string   `json:"err"`
}

// TestDropPrivileges runs a server in a child process (in its own netns, so it can use
// port 53) that drops its privileges, reads what the kernel says about the running child in
// /proc, then adds a network and a record as root (the plugin's part) and checks that the
// unprivileged child binds the new gateway's port 53 and answers the new name. A binary
// built with cgo must refuse to drop; the test then re-runs itself as a CGO_ENABLED=0
// build, which is how the plugin is meant to be built.
func TestDropPrivileges(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	dir := t.TempDir()
	st, err := records.NewLocal(filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := st.PutNetwork(ctx, netA); err != nil {
		t.Fatal(err)
	}
	if err := st.Put(ctx, rec("a", "c0", []string{"127.10.0.10"}, "web")); err != nil {
		t.Fatal(err)
	}
	child, rep := startChild(t, os.Args[0], dir)
	if rep.CgoRefused {
		goBin, err := exec.LookPath("go")
		if err != nil {
			t.Skip("test binary uses cgo (DropPrivileges correctly refused) and no go toolchain to build a pure-Go one")
		}
		bin := filepath.Join(t.TempDir(), "server.test")
		build := exec.Command(goBin, "test", "-c", "-o", bin, ".")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("build pure-Go test binary: %v\n%s", err, out)
		}
		t.Log("cgo test binary: DropPrivileges refused as it must; re-running as a CGO_ENABLED=0 build")
		child, rep = startChild(t, bin, dir)
		if rep.CgoRefused {
			t.Fatal("a CGO_ENABLED=0 binary still reports cgo")
		}
	}
	if rep.Err != "" {
		t.Fatalf("child: %s", rep.Err)
	}
	pid := child.Process.Pid

	// What the kernel says about the running server.
	status, err := procStatus(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	ids := func(id int) string { return fmt.Sprintf("%d\t%d\t%d\t%d", id, id, id, id) }
	if status["Uid"] != ids(DefaultUID) || status["Gid"] != ids(DefaultGID) || status["Groups"] != "" {
		t.Errorf("Uid %q, Gid %q, Groups %q; want %d and %d everywhere and no groups", status["Uid"], status["Gid"], status["Groups"], DefaultUID, DefaultGID)
	}
	netBind := fmt.Sprintf("%016x", uint64(1)<<unix.CAP_NET_BIND_SERVICE)
	for _, f := range []string{"CapEff", "CapPrm", "CapBnd"} {
		if status[f] != netBind {
			t.Errorf("%s = %s, want %s (CAP_NET_BIND_SERVICE only)", f, status[f], netBind)
		}
	}
	for _, f := range []string{"CapInh", "CapAmb"} {
		if status[f] != fmt.Sprintf("%016x", 0) {
			t.Errorf("%s = %s, want none", f, status[f])
		}
	}
	if status["NoNewPrivs"] != "1" {
		t.Errorf("NoNewPrivs = %q, want 1", status["NoNewPrivs"])
	}
	if _, _, ok := seccompArch(); ok && status["Seccomp"] != "2" {
		t.Errorf("Seccomp = %q, want 2 (filter)", status["Seccomp"])
	}
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	threads := 0
	for _, task := range tasks {
		ts, err := procStatus(fmt.Sprintf("/proc/%d/task/%s/status", pid, task.Name()))
		if err != nil {
			continue // the thread exited meanwhile
		}
		threads++
		if ts["CapEff"] != netBind || ts["Uid"] != ids(DefaultUID) || ts["Seccomp"] != status["Seccomp"] {
			t.Errorf("thread %s: CapEff %s Uid %q Seccomp %s", task.Name(), ts["CapEff"], ts["Uid"], ts["Seccomp"])
		}
	}
	if threads < 2 {
		t.Errorf("only %d threads inspected", threads)
	}

	// What the child saw from inside.
	if strings.Join(rep.SelfAnswer, ",") != "127.10.0.10" {
		t.Errorf("the child's own lookup after the drop: %v", rep.SelfAnswer)
	}
	if !strings.Contains(rep.ExecErr, "operation not permitted") {
		t.Errorf("exec after the drop: %q, want EPERM (seccomp)", rep.ExecErr)
	}
	if !strings.Contains(rep.ShadowErr, "permission denied") {
		t.Errorf("open /etc/shadow after the drop: %q, want EACCES", rep.ShadowErr)
	}
	if !strings.Contains(rep.StoreWriteErr, "permission denied") {
		t.Errorf("writing into the record store after the drop: %q, want EACCES", rep.StoreWriteErr)
	}

	// A network and a record written by root later: the unprivileged server reads them,
	// binds the new gateway's port 53 and answers.
	if err := st.PutNetwork(ctx, netB); err != nil {
		t.Fatal(err)
	}
	if err := st.Put(ctx, rec("b", "c1", []string{"127.20.0.10"}, "later")); err != nil {
		t.Fatal(err)
	}
	if err := Reload(filepath.Join(dir, "dns.sock")); err != nil {
		t.Fatalf("reload: %v", err)
	}
	childNS, err := ns.GetNS(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer childNS.Close()
	var later []string
	err = childNS.Do(func(ns.NetNS) error {
		m, err := queryAt("udp", "127.20.0.1:"+strconv.Itoa(privPortDNS), clientB, "later", dns.TypeA, nil)
		if err == nil {
			later = answers(m)
		}
		return err
	})
	if err != nil || strings.Join(later, ",") != "127.20.0.10" {
		t.Errorf("a network added after the drop: %v %v, want its port-53 listener to answer 127.20.0.10", later, err)
	}
}

// startChild runs bin's TestDropPrivilegesChild in a private netns on the store in dir and
// returns once it reported; the child serves until the test ends.
func startChild(t *testing.T, bin, dir string) (*exec.Cmd, capReport) {
	t.Helper()
	cmd := exec.Command(bin, "-test.run=^"+childTest+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	t.Cleanup(func() {
		_ = stdin.Close() // the child stops serving and exits
		select {
		case <-exited:
		case <-time.After(guard):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), childMarker); ok {
				lines <- rest
			}
		}
		_ = cmd.Wait()
		close(exited)
	}()
	var rep capReport
	select {
	case line := <-lines:
		if err := json.Unmarshal([]byte(line), &rep); err != nil {
			t.Fatal(err)
		}
	case <-exited:
		t.Fatal("the child exited without a report")
	case <-time.After(guard):
		t.Fatal("no report from the child")
	}
	return cmd, rep
}

// TestDropPrivilegesChild is the child's side; it does nothing in a normal run.
func TestDropPrivilegesChild(t *testing.T) {
	dir := os.Getenv(childEnv)
	if dir == "" {
		t.Skip("only runs as the child of TestDropPrivileges")
	}
	s, rep := childRun(dir)
	data, _ := json.Marshal(rep)
	fmt.Println(childMarker + string(data))
	if s != nil {
		_, _ = io.Copy(io.Discard, os.Stdin) // serve until the parent closes stdin
		_ = s.Close()
	}
}

func childRun(dir string) (s *Server, rep capReport) {
	fail := func(format string, args ...any) (*Server, capReport) {
		rep.Err = fmt.Sprintf(format, args...)
		return s, rep
	}
	// This process was cloned into a new netns: only our own lo.
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fail("lo: %v", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fail("lo up: %v", err)
	}
	s, err = New(Options{
		StoreDir:      filepath.Join(dir, "store"),
		Port:          privPortDNS,
		ResolvConf:    filepath.Join(dir, "none"),
		ControlSocket: filepath.Join(dir, "dns.sock"),
		IdleTimeout:   -1,
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return fail("%v", err)
	}
	err = s.Start(context.Background())
	if errors.Is(err, ErrCgoThreads) {
		rep.CgoRefused = true
		return nil, rep
	}
	if err != nil {
		return nil, capReport{Err: "start: " + err.Error()}
	}
	m, err := queryAt("udp", "127.10.0.1:"+strconv.Itoa(privPortDNS), clientA, "web", dns.TypeA, nil)
	if err != nil {
		return fail("query after drop: %v", err)
	}
	rep.SelfAnswer = answers(m)
	errString := func(err error) string {
		if err == nil {
			return ""
		}
		return err.Error()
	}
	rep.ExecErr = errString(exec.Command("/bin/true").Run())
	f, err := os.Open("/etc/shadow")
	if err == nil {
		_ = f.Close()
	}
	rep.ShadowErr = errString(err)
	rep.StoreWriteErr = errString(os.WriteFile("planted.json", nil, 0o600)) // the store is the working directory
	return s, rep
}

func procStatus(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for line := range strings.SplitSeq(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out, nil
}
