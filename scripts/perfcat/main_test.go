package main

import (
	"bytes"
	"strings"
	"testing"
)

// perf script output of six samples of moor-bridge and one of another command, leaf
// first, as `perf script -F comm,ip,sym` prints call chains. The last two are iptables run
// by iptexec: its own frames, and the kernel's exec of iptables in the child that still
// carries moor-bridge's name.
const script = `moor-bridge 
	ffffffff8175583c load_elf_binary
	ffffffff816c599f bprm_execve
	    7efc6c4f2ad7 [unknown]

moor-bridge 
	ffffffff81000130 do_syscall_64
	          4a1b2c syscall.Syscall6
	          4a1b2d github.com/vishvananda/netlink.(*Handle).LinkAdd
	          4a1b2e github.com/moornet/moor/link/veth.Create
	          4a1b2f main.cmdAdd
	          4a1b30 runtime.main

moor-bridge 
	ffffffff81234567 handle_mm_fault
	ffffffff81234568 exc_page_fault
	          4a1b31 encoding/json.Unmarshal
	          4a1b32 github.com/moornet/moor/ipam/store.(*Store).Put
	          4a1b33 main.cmdAdd
	          4a1b34 runtime.main

moor-bridge 
	          4a1b35 encoding/json.Unmarshal
	          4a1b36 github.com/moornet/moor/plugins.LoadConf
	          4a1b37 runtime.main

moor-bridge 
	          4a1b40 syscall.Syscall6
	          4a1b41 github.com/moornet/moor/plugins/firewall/iptexec.(*Runner).run
	          4a1b42 github.com/moornet/moor/plugins/firewall/iptexec.(*Runner).Restore
	          4a1b43 github.com/moornet/moor/plugins/firewall.(*ipt).Apply
	          4a1b44 main.cmdAdd
	          4a1b45 runtime.main

moor-bridge 
	ffffffff8175583c load_elf_binary
	ffffffff816c599f bprm_execve
	ffffffff816c59a0 __x64_sys_execve
	          4a1b46 syscall.forkAndExecInChild1
	          4a1b47 syscall.forkExec
	          4a1b48 os/exec.(*Cmd).Start
	          4a1b49 github.com/moornet/moor/plugins/firewall/iptexec.(*Runner).run
	          4a1b4a main.cmdAdd
	          4a1b4b runtime.main

ip 
	          4a1b38 main
`

func TestTally(t *testing.T) {
	samples, err := parse(strings.NewReader(script), "moor-bridge")
	if err != nil {
		t.Fatal(err)
	}
	r := tally(samples)
	want := map[string]int{
		"kernel: exec (loading the binary)": 1,
		"veth pair (link/veth)":             1,
		"IPAM (ipam/, bbolt)":               1, // JSON under IPAM is IPAM's
		"JSON (config, result)":             1,
		firewallPart.name:                   2, // iptexec's frames, and the exec of iptables it started
	}
	if r.total != 6 || r.faults != 1 {
		t.Fatalf("total %d faults %d, want 6 and 1", r.total, r.faults)
	}
	for k, v := range want {
		if r.parts[k] != v {
			t.Errorf("%s: %d samples, want %d (all: %v)", k, r.parts[k], v, r.parts)
		}
	}
	var out bytes.Buffer
	r.write(&out, 100000, 2) // 6 samples of 0.1 ms over 2 runs: 0.3 ms per run
	if !strings.Contains(out.String(), "| **all** | **0.30** |") {
		t.Errorf("table:\n%s", out.String())
	}
}
