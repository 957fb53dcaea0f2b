// Command cnibench measures CNI plugin suites the way a container runtime drives them:
// moor's plugins against Debian's reference containernetworking-plugins and against a
// physical floor (the same kernel work done in-process with netlink).
//
// Design notes.
//
//   - Plugins are driven through libcni (AddNetworkList / DelNetworkList / AddNetwork):
//     config on stdin with name, cniVersion, prevResult and runtimeConfig injected, the
//     conflist in order for ADD and in reverse for DEL, DEL getting the cached ADD result.
//     libcni's exec is replaced by timedExec, which runs the plugin exactly as libcni's
//     RawExec does and records, per operation, the span from the fork of the first plugin
//     to the exit of the last, the CPU of the processes (wait4 rusage, children included)
//     and their peak RSS.
//   - The plugins' "host" is a private netns (moorbh-<run>-<n>) that the harness creates
//     fresh for every suite run; libcni is called from a goroutine inside ns.Do of that
//     netns, so the exec'd plugin inherits it. Bridges, firewall rules and macvlan parents
//     therefore never touch the machine's own namespace. Every container gets its own
//     fresh netns (moorbc-<run>-<n>), created before and removed after the timed phases.
//     Everything is removed at the end, also on failure or Ctrl-C (see lab).
//   - Suites run interleaved A/B/A/B within each round; tables give the median over
//     rounds, and ratios are computed per round, then the median is taken. After each
//     suite run the harness waits (settle) for the kernel's asynchronous netns teardown.
//   - The moor variants need their binaries; when one is missing its rows say so and the
//     rest of the run goes on. A suite whose run fails is reported with its error.
//
// What it does not do: assert on anything (the smoke test checks it produced numbers and
// cleaned up), profile (perf), or measure DNS (scripts/bench-dns.sh does).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Scenario names accepted by -scenarios.
const (
	scenLatency = "cni-latency"
	scenGrowth  = "growth"
	scenMacvlan = "macvlan"
	scenIPAM    = "ipam"
	scenMemory  = "memory"
)

var allScenarios = []string{scenLatency, scenGrowth, scenMacvlan, scenIPAM, scenMemory}

// options is everything a run can be told; defaults keep a full run near ten minutes on
// two cores, quick() a smoke run of seconds.
type options struct {
	Scenarios      []string
	Suites         []string // cni-latency suites
	Ns             []int
	Workers        []int
	Rounds         int
	LargeRounds    int // rounds for N >= largeN
	GrowthN        int
	GrowthRounds   int
	MacvlanN       int
	MacvlanWorkers []int
	IPAMLevels     []int
	IPAMProbes     int
	IPAMEtcdMax    int // highest level moor-ipam-etcd is measured at; 0: all
	MemSamples     int
	ExecSamples    int
	Settle         time.Duration // after each suite run, plus SettlePerCtr per container
	SettlePerCtr   time.Duration
	MoorBin        string // directory of moor-* binaries
	RefBin         string // directory of the reference plugins
	RefDesc        string // what they are, for the report
	Out            string // markdown; "" or "-" for stdout
	SVG            string // growth plot; "" for none
	HeavyLarge     bool   // run the port-publishing suites at N >= largeN too
	Quick          bool
	Log            io.Writer // progress lines
}

// largeN is the N from which -large-rounds applies instead of -rounds.
const largeN = 200

func defaultOptions() options {
	return options{
		Scenarios:      allScenarios,
		Suites:         defaultLatencySuites,
		Ns:             []int{50, 500},
		Workers:        []int{1, 8},
		Rounds:         3,
		LargeRounds:    1,
		GrowthN:        1000,
		GrowthRounds:   1,
		MacvlanN:       50,
		MacvlanWorkers: []int{1, 8},
		IPAMLevels:     []int{10, 1000, 10000},
		IPAMProbes:     20,
		IPAMEtcdMax:    1000,
		MemSamples:     5,
		ExecSamples:    50,
		Settle:         time.Second,
		SettlePerCtr:   2 * time.Millisecond,
		MoorBin:        "bin",
		RefBin:         "/usr/lib/cni",
		RefDesc:        "Debian containernetworking-plugins",
		Log:            os.Stderr,
	}
}

// quick shrinks every size for a smoke run: the numbers mean nothing, the code paths are
// the same.
func (o *options) quick() {
	o.Quick = true
	o.Ns = []int{6}
	o.Workers = []int{1, 2}
	o.Rounds, o.LargeRounds, o.GrowthRounds = 1, 1, 1
	o.GrowthN = 20
	o.MacvlanN = 4
	o.MacvlanWorkers = []int{1, 2}
	o.IPAMLevels = []int{2, 12}
	o.IPAMProbes = 3
	o.MemSamples = 2
	o.ExecSamples = 5
	o.Settle = 50 * time.Millisecond
	o.SettlePerCtr = 0
}

func main() {
	o := defaultOptions()
	// QUICK sets the defaults, so that flags given with it still win.
	quickArg := slices.ContainsFunc(os.Args[1:], func(a string) bool { return a == "-quick" || a == "--quick" || a == "-quick=true" })
	if os.Getenv("QUICK") == "1" || quickArg {
		o.quick()
	}
	var scen, suites, ns, workers, mvw, levels string
	flag.StringVar(&scen, "scenarios", strings.Join(o.Scenarios, ","), "scenarios to run: "+strings.Join(allScenarios, ","))
	flag.StringVar(&suites, "suites", strings.Join(o.Suites, ","), "cni-latency suites: "+strings.Join(latencySuiteNames(), ","))
	flag.StringVar(&ns, "n", joinInts(o.Ns), "cni-latency container counts")
	flag.StringVar(&workers, "workers", joinInts(o.Workers), "cni-latency concurrent workers")
	flag.IntVar(&o.Rounds, "rounds", o.Rounds, "rounds (N < 200, macvlan, ipam, memory)")
	flag.IntVar(&o.LargeRounds, "large-rounds", o.LargeRounds, "rounds for cni-latency at N >= 200")
	flag.IntVar(&o.GrowthN, "growth-n", o.GrowthN, "ADDs in the growth run")
	flag.IntVar(&o.GrowthRounds, "growth-rounds", o.GrowthRounds, "rounds of the growth run")
	flag.IntVar(&o.MacvlanN, "macvlan-n", o.MacvlanN, "containers per macvlan run")
	flag.StringVar(&mvw, "macvlan-workers", joinInts(o.MacvlanWorkers), "macvlan concurrent workers")
	flag.StringVar(&levels, "ipam-levels", joinInts(o.IPAMLevels), "addresses already allocated when IPAM is measured")
	flag.IntVar(&o.IPAMProbes, "ipam-probes", o.IPAMProbes, "ADD+DEL pairs per IPAM level, suite and round")
	flag.IntVar(&o.IPAMEtcdMax, "ipam-etcd-max", o.IPAMEtcdMax, "highest -ipam-levels level moor-ipam-etcd is measured at (0: all)")
	flag.IntVar(&o.MemSamples, "mem-samples", o.MemSamples, "ADDs per suite for peak memory")
	flag.IntVar(&o.ExecSamples, "exec-samples", o.ExecSamples, "VERSION execs per binary for the exec floor")
	flag.DurationVar(&o.Settle, "settle", o.Settle, "wait after each suite run (plus 2ms per container)")
	flag.BoolVar(&o.HeavyLarge, "heavy-large", o.HeavyLarge, "run the port-publishing suites at N >= 200 too (adds minutes)")
	flag.StringVar(&o.MoorBin, "bin", o.MoorBin, "directory of the moor-* binaries")
	flag.StringVar(&o.RefBin, "ref", o.RefBin, "directory of the reference CNI plugins")
	flag.StringVar(&o.RefDesc, "ref-desc", o.RefDesc, "what the reference plugins are (how built), for the report")
	flag.StringVar(&o.Out, "out", "", "markdown output file (default stdout)")
	flag.StringVar(&o.SVG, "svg", "", "SVG plot of ADD latency growth (default none)")
	flag.Bool("quick", o.Quick, "tiny sizes, for a smoke run (also QUICK=1); other flags still apply")
	flag.Parse()

	var err error
	o.Scenarios = splitList(scen)
	o.Suites = splitList(suites)
	for _, p := range []struct {
		s   string
		dst *[]int
	}{{ns, &o.Ns}, {workers, &o.Workers}, {mvw, &o.MacvlanWorkers}, {levels, &o.IPAMLevels}} {
		if *p.dst, err = parseInts(p.s); err != nil {
			fmt.Fprintln(os.Stderr, "cnibench:", err)
			os.Exit(2)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "cnibench:", err)
		stop()
		os.Exit(1)
	}
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range splitList(s) {
		v, err := strconv.Atoi(f)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("bad number %q in %q", f, s)
		}
		out = append(out, v)
	}
	return out, nil
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}
