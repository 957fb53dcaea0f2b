// Command perfcat says where the CPU time of a plugin's invocations goes, from
// `perf script -F comm,ip,sym` output of `perf record -e task-clock -c PERIOD -g` runs (one
// sample per PERIOD ns of CPU, with call chains): it assigns every sample of the named
// command to one part of the invocation (the kernel loading the binary, the Go runtime's
// start, package initialisers, the veth pair, IPAM, the firewall, ...) and prints a
// markdown table of milliseconds per invocation and shares, plus the share of samples
// taken inside a page fault (a cross-cutting cost, counted apart).
//
// It reads symbols only: it needs a binary with its symbol table (built without -s) and
// Go's frame pointers for the call chains. It does not run perf itself
// (scripts/bench-profile.sh does).
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// part is one category of CPU time; match reports whether a frame's symbol belongs to it.
type part struct {
	name  string
	match func(sym string) bool
}

func has(subs ...string) func(string) bool {
	return func(sym string) bool {
		for _, s := range subs {
			if strings.Contains(sym, s) {
				return true
			}
		}
		return false
	}
}

// firewallPart is moor's firewall: plugins/firewall (nftables through netlink; iptables
// run as a program by plugins/firewall/iptexec) and the nftables library.
var firewallPart = part{"firewall (plugins/firewall: nftables, iptables via iptexec)", has("moor/plugins/firewall", "google/nftables")}

// children are the plugin starting another program, recognised anywhere on the stack
// and taking precedence over phases: iptexec forks and execs iptables, and until the
// kernel's exec has replaced the program the child still carries the plugin's name, with
// iptexec's frames under the kernel's exec. That exec is the firewall's cost, not the
// plugin's own start.
var children = []part{
	{firewallPart.name, has("moor/plugins/firewall/iptexec.")},
}

// phases are whole stages of a process's life, recognised anywhere on the stack and
// taking precedence, in this order.
var phases = []part{
	{"kernel: exec (loading the binary)", has("load_elf_binary", "begin_new_exec", "bprm_execve", "__x64_sys_execve")},
	{"kernel: exit (tearing the process down)", has("do_exit", "do_group_exit", "exit_mmap")},
	{"Go: package initialisers", has("runtime.doInit")},
	{"Go: runtime.GOMAXPROCS", has("runtime.GOMAXPROCS")},
	{"Go: garbage collector", has("runtime.gcBgMarkWorker", "runtime.bgsweep", "runtime.bgscavenge", "runtime.gcStart")},
}

// components are the parts of the plugin's own work; the one nearest the root of the
// stack wins (IPAM's JSON is IPAM's), so the order here does not matter.
var components = []part{
	{"veth pair (link/veth)", has("moor/link/veth.")},
	{"bridge and gateway (link/bridge)", has("moor/link/bridge.")},
	{"shaping (link/shaping)", has("moor/link/shaping.")},
	{"IPAM (ipam/, bbolt)", has("moor/ipam/", "go.etcd.io/bbolt")},
	firewallPart,
	{"DNS records (dns/)", has("moor/dns/")},
}

// fallbacks apply when no component is on the stack.
var fallbacks = []part{
	{"JSON (config, result)", has("encoding/json")},
	{"other netlink (addresses, routes, lookups)", has("vishvananda/netlink", "mdlayher/netlink")},
	{"Go: runtime start and its threads (sysmon, scheduler)", has("runtime.rt0_go", "runtime.schedinit", "runtime.mstart", "runtime.newosproc")},
}

const other = "other (config, netns switches, result, scheduler)"

// isPageFault marks frames of the kernel's page fault path.
var isPageFault = has("exc_page_fault", "handle_mm_fault")

// classify returns the part of one sample; frames are leaf first, as perf prints them.
func classify(frames []string) string {
	for _, p := range append(children, phases...) {
		for _, f := range frames {
			if p.match(f) {
				return p.name
			}
		}
	}
	for i := len(frames) - 1; i >= 0; i-- { // root first
		for _, p := range components {
			if p.match(frames[i]) {
				return p.name
			}
		}
	}
	for _, p := range fallbacks {
		for _, f := range frames {
			if p.match(f) {
				return p.name
			}
		}
	}
	return other
}

// sample is one sample of the command: its frames' symbols, leaf first.
type sample struct{ frames []string }

// parse reads perf script output (a header line starting with the command, then one
// indented "addr symbol" line per frame, then a blank line) and keeps the samples of comm.
func parse(r io.Reader, comm string) ([]sample, error) {
	var out []sample
	var cur *sample
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.TrimSpace(line) == "":
			cur = nil
		case line[0] != ' ' && line[0] != '\t':
			cur = nil
			if f := strings.Fields(line); len(f) > 0 && f[0] == comm {
				out = append(out, sample{})
				cur = &out[len(out)-1]
			}
		case cur != nil:
			f := strings.Fields(line)
			if len(f) >= 2 {
				cur.frames = append(cur.frames, f[1])
			}
		}
	}
	return out, sc.Err()
}

// report is the table's data: per part its sample count, and the page-fault samples.
type report struct {
	parts  map[string]int
	total  int
	faults int
}

func tally(samples []sample) report {
	r := report{parts: map[string]int{}}
	for _, s := range samples {
		r.parts[classify(s.frames)]++
		r.total++
		for _, f := range s.frames {
			if isPageFault(f) {
				r.faults++
				break
			}
		}
	}
	return r
}

func (r report) write(w io.Writer, periodNS float64, runs int) {
	ms := func(n int) float64 { return float64(n) * periodNS / 1e6 / float64(runs) }
	names := make([]string, 0, len(r.parts))
	for n := range r.parts {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		if r.parts[names[i]] != r.parts[names[j]] {
			return r.parts[names[i]] > r.parts[names[j]]
		}
		return names[i] < names[j]
	})
	fmt.Fprintln(w, "| part | CPU ms per ADD | share |")
	fmt.Fprintln(w, "|---|---:|---:|")
	for _, n := range names {
		fmt.Fprintf(w, "| %s | %.2f | %.0f %% |\n", n, ms(r.parts[n]), 100*float64(r.parts[n])/float64(max(r.total, 1)))
	}
	fmt.Fprintf(w, "| **all** | **%.2f** | 100 %% |\n", ms(r.total))
	fmt.Fprintf(w, "| of which inside page faults | %.2f | %.0f %% |\n", ms(r.faults), 100*float64(r.faults)/float64(max(r.total, 1)))
}

func main() {
	comm := flag.String("comm", "moor-bridge", "command whose samples count (perf's comm)")
	period := flag.Float64("period", 100000, "task-clock sample period in ns (perf record -c)")
	runs := flag.Int("runs", 1, "invocations recorded, to give time per invocation")
	flag.Parse()
	samples, err := parse(os.Stdin, *comm)
	if err != nil {
		fmt.Fprintln(os.Stderr, "perfcat:", err)
		os.Exit(1)
	}
	if len(samples) == 0 {
		fmt.Fprintf(os.Stderr, "perfcat: no samples of %s\n", *comm)
		os.Exit(1)
	}
	tally(samples).write(os.Stdout, *period, *runs)
}
