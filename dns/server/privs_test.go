package server

import (
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

	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/dns/records"
)

// Environment of the child process of TestDropPrivileges.
const (
	childEnv    = "MOOR_DNS_CAPDROP_CHILD" // path of the child's JSON report
	childTest   = "TestDropPrivilegesChild"
	privPortDNS = 53 // a privileged port: binding it needs CAP_NET_BIND_SERVICE
)

// capReport is what the child found after the drop.
type capReport struct {
	CgoRefused   bool              `json:"cgoRefused"`
	Status       map[string]string `json:"status"`  // /proc/self/status fields
	ThreadCapEff []string          `json:"threads"` // CapEff of every thread
	LaterBindErr string            `json:"laterBindErr"`
	LaterAnswer  []string          `json:"laterAnswer"`
	ChownErr     string            `json:"chownErr"`
	Err          string            `json:"err"`
}

// TestDropPrivileges runs a server in a child process (in its own netns, so it can use
// port 53) with privileges dropped, and checks what the kernel says about the child's
// capabilities. A binary built with cgo must refuse to drop; the test then re-runs itself as
// a CGO_ENABLED=0 build, which is how the plugin is meant to be built.
func TestDropPrivileges(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	rep := runChild(t, os.Args[0])
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
		rep = runChild(t, bin)
		if rep.CgoRefused {
			t.Fatal("a CGO_ENABLED=0 binary still reports cgo")
		}
	}
	if rep.Err != "" {
		t.Fatalf("child: %s", rep.Err)
	}
	netBind := fmt.Sprintf("%016x", uint64(1)<<unix.CAP_NET_BIND_SERVICE)
	for _, f := range []string{"CapEff", "CapPrm", "CapBnd"} {
		if rep.Status[f] != netBind {
			t.Errorf("%s = %s, want %s (CAP_NET_BIND_SERVICE only)", f, rep.Status[f], netBind)
		}
	}
	for _, f := range []string{"CapInh", "CapAmb"} {
		if rep.Status[f] != fmt.Sprintf("%016x", 0) {
			t.Errorf("%s = %s, want none", f, rep.Status[f])
		}
	}
	if rep.Status["NoNewPrivs"] != "1" {
		t.Errorf("NoNewPrivs = %q, want 1", rep.Status["NoNewPrivs"])
	}
	if len(rep.ThreadCapEff) < 2 {
		t.Errorf("only %d threads inspected", len(rep.ThreadCapEff))
	}
	for i, c := range rep.ThreadCapEff {
		if c != netBind {
			t.Errorf("thread %d CapEff = %s, want %s", i, c, netBind)
		}
	}
	if rep.LaterBindErr != "" || strings.Join(rep.LaterAnswer, ",") != "127.20.0.10" {
		t.Errorf("after the drop, a new network on port 53: bind error %q, answer %v", rep.LaterBindErr, rep.LaterAnswer)
	}
	if !strings.Contains(rep.ChownErr, "operation not permitted") {
		t.Errorf("chown after the drop: %q, want EPERM (CAP_CHOWN gone)", rep.ChownErr)
	}
}

func runChild(t *testing.T, bin string) capReport {
	t.Helper()
	out := filepath.Join(t.TempDir(), "report.json")
	cmd := exec.Command(bin, "-test.run=^"+childTest+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"="+out)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET} // a private netns
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child %s: %v\n%s", bin, err, b)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("child report: %v", err)
	}
	var rep capReport
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatal(err)
	}
	return rep
}

// TestDropPrivilegesChild is the child's side; it does nothing in a normal run.
func TestDropPrivilegesChild(t *testing.T) {
	out := os.Getenv(childEnv)
	if out == "" {
		t.Skip("only runs as the child of TestDropPrivileges")
	}
	rep := childRun(t)
	data, _ := json.Marshal(rep)
	if err := os.WriteFile(out, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func childRun(t *testing.T) (rep capReport) {
	fail := func(format string, args ...any) capReport {
		rep.Err = fmt.Sprintf(format, args...)
		return rep
	}
	// This process was cloned into a new netns: no Set on a thread, only our own lo.
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fail("lo: %v", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fail("lo up: %v", err)
	}
	dir := t.TempDir()
	st, err := records.NewLocal(filepath.Join(dir, "store"))
	if err != nil {
		return fail("%v", err)
	}
	ctx := context.Background()
	if err := st.PutNetwork(ctx, netA); err != nil {
		return fail("%v", err)
	}
	s, err := New(Options{
		Store:         st,
		Port:          privPortDNS,
		ResolvConf:    filepath.Join(dir, "none"),
		ControlSocket: filepath.Join(dir, "dns.sock"),
		IdleTimeout:   -1,
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return fail("%v", err)
	}
	err = s.Start(ctx)
	if errors.Is(err, ErrCgoThreads) {
		rep.CgoRefused = true
		return rep
	}
	if err != nil {
		return fail("start: %v", err)
	}
	defer s.Close()

	// A network added after the drop still gets its port-53 listener.
	if err := st.PutNetwork(ctx, netB); err != nil {
		return fail("%v", err)
	}
	if err := st.Put(ctx, rec("b", "c1", []string{"127.20.0.10"}, "later")); err != nil {
		return fail("%v", err)
	}
	if err := s.Reload(ctx); err != nil {
		return fail("reload: %v", err)
	}
	for _, e := range s.listenErrors() {
		rep.LaterBindErr += e.Error()
	}
	m, err := queryAt("udp", "127.20.0.1:"+strconv.Itoa(privPortDNS), clientB, "later", dns.TypeA, nil)
	if err != nil {
		return fail("query after drop: %v", err)
	}
	rep.LaterAnswer = answers(m)

	f := filepath.Join(dir, "owned")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		return fail("%v", err)
	}
	if err := os.Chown(f, 1, 1); err != nil {
		rep.ChownErr = err.Error()
	}

	rep.Status, err = procStatus("/proc/self/status")
	if err != nil {
		return fail("%v", err)
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return fail("%v", err)
	}
	for _, task := range tasks {
		st, err := procStatus(filepath.Join("/proc/self/task", task.Name(), "status"))
		if err != nil {
			continue // the thread exited meanwhile
		}
		rep.ThreadCapEff = append(rep.ThreadCapEff, st["CapEff"])
	}
	return rep
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
