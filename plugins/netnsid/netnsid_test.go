package netnsid

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/plugins/plugintest"
)

func TestStringParse(t *testing.T) {
	id := ID{Dev: 4, Ino: 4026532208}
	if id.String() != "4-4026532208" {
		t.Fatalf("String() = %q", id.String())
	}
	if got, err := Parse(id.String()); err != nil || got != id {
		t.Fatalf("Parse(String()) = %v, %v", got, err)
	}
	for _, bad := range []string{"", "4", "4-", "-5", "a-5", "4-0", "4-5-6"} {
		if _, err := Parse(bad); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q", bad)) {
			t.Errorf("Parse(%q): %v, want an error naming the value", bad, err)
		}
	}
}

// Self is the calling thread's namespace, whichever path names it; a new namespace has
// another identity, and is not the machine's.
func TestSelfAndOf(t *testing.T) {
	plugintest.RequireRoot(t)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	host, err := Self()
	if err != nil {
		t.Fatal(err)
	}
	if viaPid, err := Of(fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())); err != nil || viaPid != host {
		t.Fatalf("Of(own task's ns) = %v, %v; Self() = %v", viaPid, err, host)
	}
	n := plugintest.Netns(t, "moornsid")
	named, err := Of(n.Path())
	if err != nil {
		t.Fatal(err)
	}
	if named == host {
		t.Fatalf("a new namespace has the host's identity %v", host)
	}
	var inside ID
	var machine bool
	var cookieIn uint64
	err = n.Do(func(ns.NetNS) error {
		var err error
		if cookieIn, err = Cookie(); err != nil {
			return err
		}
		inside, err = Self()
		machine = IsMachine()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if inside != named {
		t.Errorf("Self() inside %s = %v, Of(path) = %v", n.Path(), inside, named)
	}
	if machine {
		t.Errorf("IsMachine() inside a namespace the test made")
	}
	c1, err1 := Cookie()
	c2, err2 := Cookie()
	if err1 != nil || err2 != nil || c1 != c2 || c1 == cookieIn || cookieIn == 0 {
		t.Errorf("cookies: host %d, %d (%v, %v), inside %d; want one stable host cookie and another inside", c1, c2, err1, err2, cookieIn)
	}
	if _, err := Of(filepath.Join(t.TempDir(), "none")); err == nil {
		t.Error("Of(a missing path) succeeded")
	}
	if _, err := Of(os.Args[0]); err == nil {
		t.Error("Of(a regular file that is no namespace) succeeded")
	}
}

func TestScanMountInfo(t *testing.T) {
	const info = `22 1 0:21 / /proc rw,nosuid shared:5 - proc proc rw
530 29 0:4 net:[4026532208] /run/netns/a rw shared:300 - nsfs nsfs rw
531 29 0:4 net:[4026532999] /run/netns/b rw - nsfs nsfs rw
532 29 0:40 net:[4026532777] /odd rw - tmpfs tmpfs rw
`
	for ino, want := range map[uint64]bool{4026532208: true, 4026532999: true, 4026532777: false, 1: false} {
		got, err := scanMountInfo(strings.NewReader(info), ID{Dev: 4, Ino: ino})
		if err != nil || got != want {
			t.Errorf("mounted %d: %v, %v; want %v", ino, got, err, want)
		}
	}
}

// otherProcessIn compares inodes of <proc>/<pid>/net/dev with <proc>/self/net/dev, and
// never counts the caller.
func TestOtherProcessInFakeProc(t *testing.T) {
	dir := t.TempDir()
	saved := procDir
	procDir = dir
	defer func() { procDir = saved }()
	mk := func(pid string) string {
		p := filepath.Join(dir, pid, "net")
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		return filepath.Join(p, "dev")
	}
	self := mk("self")
	if err := os.WriteFile(self, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// Our own pid in the same namespace, others elsewhere: nobody else.
	if err := os.Link(self, mk(strconv.Itoa(os.Getpid()))); err != nil {
		t.Fatal(err)
	}
	for _, pid := range []string{"1", "77"} {
		if err := os.WriteFile(mk(pid), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_ = os.MkdirAll(filepath.Join(dir, "sys"), 0o755) // not a pid
	if got, err := otherProcessIn(); err != nil || got {
		t.Fatalf("otherProcessIn() = %v, %v; want false", got, err)
	}
	if err := os.Link(self, mk("4242")); err != nil {
		t.Fatal(err)
	}
	if got, err := otherProcessIn(); err != nil || !got {
		t.Fatalf("otherProcessIn() with pid 4242 in the namespace = %v, %v; want true", got, err)
	}
}

// helperEnv makes the test binary a helper that answers InUse for its own namespace, once
// per line read from stdin.
const helperEnv = "MOOR_NETNSID_HELPER"

func TestInUseHelper(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		return
	}
	id, err := Self()
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		inUse, err := InUse(id)
		mounted, _ := mountedAt(id)
		fmt.Println(inUse, mounted, err)
	}
	os.Exit(0)
}

// helper runs the InUse helper (the test binary) as name args..., started inside n, and
// returns a function that asks it and reports whether it still sees a mount of n.
func helper(t *testing.T, n ns.NetNS, name string, args ...string) func(step string, want bool) bool {
	t.Helper()
	cmd := exec.Command(name, append(args, os.Args[0], "-test.run=^TestInUseHelper$")...)
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := n.Do(func(ns.NetNS) error { return cmd.Start() }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	answers := bufio.NewReader(stdout)
	return func(step string, want bool) bool {
		t.Helper()
		if _, err := io.WriteString(stdin, "?\n"); err != nil {
			t.Fatal(err)
		}
		line := make(chan string, 1)
		go func() { l, _ := answers.ReadString('\n'); line <- strings.TrimSpace(l) }()
		select {
		case got := <-line:
			f := strings.Fields(got)
			if len(f) != 3 || f[0] != fmt.Sprint(want) || f[2] != "<nil>" {
				t.Fatalf("%s: InUse, mounted, error = %q, want InUse %v", step, got, want)
			}
			return f[1] == "true"
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: the helper did not answer", step)
		}
		return false
	}
}

// InUse, asked by a process inside a namespace: true while the namespace is mounted, still
// true once unmounted while another process is in it, false when the asking process is all
// that is left.
func TestInUseRealNamespace(t *testing.T) {
	plugintest.RequireRoot(t)
	n, err := plugintest.NewNamedNetns("moornsid-" + plugintest.RandomSuffix())
	if err != nil {
		t.Fatal(err)
	}
	deleted := false
	defer func() {
		if !deleted {
			_ = plugintest.DeleteNetns(n)
		}
	}()
	ask := helper(t, n, "env") // env execs the helper: no extra process in n
	ask("mounted, alone", true)
	other := exec.Command("sleep", "600")
	if err := n.Do(func(ns.NetNS) error { return other.Start() }); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = other.Process.Kill(); _ = other.Wait() }()
	if err := plugintest.DeleteNetns(n); err != nil {
		t.Fatal(err)
	}
	deleted = true
	ask("unmounted, with another process", true)
	_ = other.Process.Kill()
	_ = other.Wait()
	ask("unmounted, alone", false)
}

// A process that is PID 1 (a container's main process) always finds its namespace in use,
// also alone and unmounted: its namespace ends with its container.
func TestInUseAsPID1(t *testing.T) {
	plugintest.RequireRoot(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("needs unshare(1)")
	}
	n, err := plugintest.NewNamedNetns("moornsid-" + plugintest.RandomSuffix())
	if err != nil {
		t.Fatal(err)
	}
	ask := helper(t, n, "unshare", "--pid", "--fork", "--mount-proc", "--propagation", "slave")
	ask("PID 1, mounted", true)
	if err := plugintest.DeleteNetns(n); err != nil {
		t.Fatal(err)
	}
	if mounted := ask("PID 1, unmounted, alone", true); mounted {
		t.Skip("the helper's mount table still shows the namespace (no mount propagation): PID 1 untested")
	}
}
