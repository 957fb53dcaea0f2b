package allocator_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"

	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/moornet/moor/ipam/allocator"
	"github.com/moornet/moor/ipam/config"
	"github.com/moornet/moor/ipam/store"
	"github.com/moornet/moor/ipam/store/kv"
	"github.com/moornet/moor/ipam/store/storetest"
)

// helperEnv carries the job of a re-executed test binary (see TestHelperProcess).
const helperEnv = "MOOR_IPAM_TEST_HELPER"

// resultMarker prefixes the line a helper prints its addresses on.
const resultMarker = "MOOR-IPAM-RESULT "

type helperJob struct {
	Config      json.RawMessage `json:"config"`
	ContainerID string          `json:"containerID"`
	// Deferred: AllocateDeferred, print the addresses, then SIGKILL the process before
	// ("kill-before-commit") or after ("kill-after-commit") calling commit.
	Deferred string `json:"deferred,omitempty"`
}

// TestHelperProcess is not a test: it is the body of the child processes the process
// tests start (os.Args[0] -test.run=^TestHelperProcess$ with helperEnv set). It does
// one ADD on the config's store, as a moor-ipam process would, and prints the addresses.
func TestHelperProcess(t *testing.T) {
	spec := os.Getenv(helperEnv)
	if spec == "" {
		t.Skip("runs only as a child process of the process tests")
	}
	var job helperJob
	if err := json.Unmarshal([]byte(spec), &job); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(job.Config)
	if err != nil {
		t.Fatal(err)
	}
	st, err := allocator.OpenStore(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	a := allocator.New(cfg, st)
	if job.Deferred != "" {
		res, _, commit, err := a.AllocateDeferred(ctx, allocator.Request{Key: key(job.ContainerID)})
		if err != nil {
			t.Fatalf("AllocateDeferred: %v", err)
		}
		if job.Deferred == "kill-after-commit" {
			if err := commit(); err != nil {
				t.Fatalf("commit: %v", err)
			}
		}
		printResult(res)
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
	res, err := a.Allocate(ctx, allocator.Request{Key: key(job.ContainerID)})
	if err != nil {
		t.Fatalf("Allocate: %v", err)
	}
	printResult(res)
}

func printResult(res *types100.Result) {
	var addrs []string
	for _, ip := range res.IPs {
		addrs = append(addrs, ip.Address.String())
	}
	fmt.Println(resultMarker + strings.Join(addrs, ","))
}

// child prepares a re-execution of the test binary doing one ADD for containerID;
// extraEnv is added to the child's environment.
func child(t *testing.T, cfg []byte, containerID string, extraEnv ...string) *exec.Cmd {
	t.Helper()
	return childJob(t, helperJob{Config: cfg, ContainerID: containerID}, extraEnv...)
}

// childJob prepares a re-execution of the test binary doing job.
func childJob(t *testing.T, j helperJob, extraEnv ...string) *exec.Cmd {
	t.Helper()
	job, err := json.Marshal(j)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	for _, e := range os.Environ() {
		if name, _, _ := strings.Cut(e, "="); name != kv.FaultEnv && name != helperEnv {
			cmd.Env = append(cmd.Env, e)
		}
	}
	cmd.Env = append(cmd.Env, append(extraEnv, helperEnv+"="+string(job))...)
	return cmd
}

func resultOf(out []byte) (string, bool) {
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if line, ok := strings.CutPrefix(sc.Text(), resultMarker); ok {
			return line, true
		}
	}
	return "", false
}

func localConfig(t *testing.T, ipam string) []byte {
	return []byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":"procnet","ipam":`+ipam+`}`, t.TempDir()))
}

// 32 ADD processes at once on one local store never share an address.
func TestConcurrentAddProcesses(t *testing.T) {
	const procs = 32
	raw := localConfig(t, `{"dataDir":"%s","subnet":"10.77.0.0/24"}`)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		byAddr  = map[string]string{}
		outputs = make([][]byte, procs)
		errs    = make([]error, procs)
	)
	cmds := make([]*exec.Cmd, procs)
	for i := range cmds {
		cmds[i] = child(t, raw, fmt.Sprintf("proc%02d", i))
	}
	for i, cmd := range cmds {
		wg.Add(1)
		go func(i int, cmd *exec.Cmd) {
			defer wg.Done()
			outputs[i], errs[i] = cmd.CombinedOutput()
		}(i, cmd)
	}
	wg.Wait()
	for i := range cmds {
		addr, ok := resultOf(outputs[i])
		if errs[i] != nil || !ok {
			t.Fatalf("process %d: %v\n%s", i, errs[i], outputs[i])
		}
		mu.Lock()
		if other, dup := byAddr[addr]; dup {
			t.Errorf("%s handed to proc%02d and %s", addr, i, other)
		}
		byAddr[addr] = fmt.Sprintf("proc%02d", i)
		mu.Unlock()
	}
	cfg, err := config.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	_, st := onLocal(t, cfg)
	list, err := st.List(ctx)
	if err != nil || len(list) != procs {
		t.Fatalf("store lists %d attachments (%v), want %d", len(list), err, procs)
	}
	for _, att := range list {
		if byAddr[att.IPs[0].String()] != att.ContainerID {
			t.Errorf("store says %s holds %s; the process was told %s", att.ContainerID, att.IPs[0], byAddr[att.IPs[0].String()])
		}
	}
	verify(t, st)
}

func verify(t *testing.T, st store.Store) {
	t.Helper()
	if err := st.(storetest.Verifier).Verify(ctx); err != nil {
		t.Fatalf("store inconsistent: %v", err)
	}
}

// A process SIGKILLed inside the allocation transaction leaves the store as it was:
// the address is free, no owner entry without an attachment, and the store is usable.
func TestKilledMidAllocation(t *testing.T) {
	raw := localConfig(t, `{"dataDir":"%s","ranges":[[{"subnet":"10.78.0.0/24"}],[{"subnet":"fd00:78::/64"}]]}`)
	cfg, err := config.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	a, st := onLocal(t, cfg)
	add(t, a, allocator.Request{Key: key("before")}) // state the crash must not disturb

	cmd := child(t, raw, "victim", kv.FaultEnv+"="+kv.FaultAfterReserve+":kill")
	out, err := cmd.CombinedOutput()
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if err == nil || !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child was not killed by SIGKILL: %v (%v)\n%s", err, cmd.ProcessState, out)
	}
	if _, ok := resultOf(out); ok {
		t.Fatalf("killed child reported a result:\n%s", out)
	}
	verify(t, st)
	list, err := st.List(ctx)
	if err != nil || len(list) != 1 || list[0].Key != key("before") {
		t.Fatalf("after the kill: %+v, %v", list, err)
	}
	// The addresses the victim had reserved are free: the next ADD gets them, and the
	// lock the victim held is gone.
	if got := ips(add(t, a, allocator.Request{Key: key("after")})); got != "10.78.0.3/24 gw 10.78.0.1, fd00:78::3/64 gw fd00:78::1" {
		t.Fatalf("after the kill: %s", got)
	}
	verify(t, st)

	// The ":error" form fails the transaction at the same point, in process.
	t.Setenv(kv.FaultEnv, kv.FaultAfterReserve+":error")
	_, err = a.Allocate(ctx, allocator.Request{Key: key("failing"), RequestedIPs: []netip.Prefix{netip.MustParsePrefix("10.78.0.99/32")}})
	if err == nil || !strings.Contains(err.Error(), "fault injected at ipam/after-reserve") {
		t.Fatalf("error fault: %v", err)
	}
	verify(t, st)
	t.Setenv(kv.FaultEnv, "")
	if got := ips(add(t, a, allocator.Request{Key: key("requested"), RequestedIPs: []netip.Prefix{netip.MustParsePrefix("10.78.0.99/32")}})); !strings.HasPrefix(got, "10.78.0.99/24") {
		t.Fatalf("requested address after a failed transaction: %s", got)
	}
}

// A deferred allocation (AllocateDeferred, what moor-macvlan uses to overlap the commit's
// fdatasyncs with its interface work) is durable once commit returned: a process killed
// right after leaves it in the file for the next opener. A process killed before commit
// (the ADD never returned) leaves the store as it was, consistent and unlocked, and the
// addresses it had been told are free again.
func TestDeferredCommitDurability(t *testing.T) {
	raw := localConfig(t, `{"dataDir":"%s","ranges":[[{"subnet":"10.79.0.0/24"}]]}`)
	cfg, err := config.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	a, st := onLocal(t, cfg)
	add(t, a, allocator.Request{Key: key("before")}) // 10.79.0.2

	kill := func(id, mode string) string {
		t.Helper()
		cmd := childJob(t, helperJob{Config: raw, ContainerID: id, Deferred: mode})
		out, err := cmd.CombinedOutput()
		ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
		if err == nil || !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("%s: child was not killed by SIGKILL: %v (%v)\n%s", mode, err, cmd.ProcessState, out)
		}
		addr, ok := resultOf(out)
		if !ok {
			t.Fatalf("%s: no result before the kill:\n%s", mode, out)
		}
		return addr
	}

	lost := kill("lost", "kill-before-commit")
	if lost != "10.79.0.3/24" {
		t.Fatalf("uncommitted child was told %s, want 10.79.0.3/24", lost)
	}
	verify(t, st)
	if _, err := st.Get(ctx, key("lost")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("an allocation killed before its commit is in the store: %v", err)
	}

	kept := kill("kept", "kill-after-commit")
	if kept != lost {
		t.Fatalf("after the uncommitted kill the next allocation got %s, want the free %s", kept, lost)
	}
	verify(t, st)
	att, err := st.Get(ctx, key("kept"))
	if err != nil || len(att.IPs) != 1 || att.IPs[0].String() != kept {
		t.Fatalf("an allocation killed after its commit: %+v, %v; want %s", att, err, kept)
	}
	if got := ips(add(t, a, allocator.Request{Key: key("after")})); got != "10.79.0.4/24 gw 10.79.0.1" {
		t.Fatalf("next allocation: %s", got)
	}
	verify(t, st)
}
