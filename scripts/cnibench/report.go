package main

import (
	"fmt"
	"io"
	"math"
	"path/filepath"
	"strconv"
	"strings"
)

// maxErrLen bounds an error message quoted in the report.
const maxErrLen = 400

func num(v float64, prec int) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "–"
	}
	return strconv.FormatFloat(v, 'f', prec, 64)
}

func ratio(v float64) string { return num(v, 2) }

// table is a markdown table; the first textCols columns are left-aligned text, the rest
// right-aligned numbers.
type table struct {
	head     []string
	textCols int
	rows     [][]string
	optional bool // an empty optional table prints nothing
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) write(w io.Writer) {
	if len(t.rows) == 0 {
		if t.optional {
			return
		}
		fmt.Fprintln(w, "(no data)")
		fmt.Fprintln(w)
		return
	}
	fmt.Fprintf(w, "| %s |\n", strings.Join(t.head, " | "))
	sep := make([]string, len(t.head))
	for i := range sep {
		sep[i] = "---:"
		if i < t.textCols {
			sep[i] = "---"
		}
	}
	fmt.Fprintf(w, "|%s|\n", strings.Join(sep, "|"))
	for _, r := range t.rows {
		fmt.Fprintf(w, "| %s |\n", strings.Join(r, " | "))
	}
	fmt.Fprintln(w)
}

func metricNames(ms []metric) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.name
	}
	return out
}

// cellTable has one row per size and suite that ran, values the median over rounds.
func cellTable(w io.Writer, m *matrix, cols []metric) {
	t := &table{head: append([]string{"N", "workers", "suite"}, metricNames(cols)...), textCols: 3}
	for _, c := range m.Cfgs {
		for _, s := range m.Suites {
			if !m.ok(c, s) {
				continue
			}
			row := []string{strconv.Itoa(c.N), strconv.Itoa(c.W), s}
			for _, col := range cols {
				row = append(row, num(overRounds(m.cell(c, s), col), col.prec))
			}
			t.add(row...)
		}
	}
	t.write(w)
}

// ratioTable has one row per size and pair that both ran: the median of per-round ratios.
func ratioTable(w io.Writer, m *matrix, cols []metric) {
	t := &table{head: append([]string{"N × workers", "ratio"}, metricNames(cols)...), textCols: 2, optional: true}
	for _, c := range m.Cfgs {
		for _, p := range m.Pairs {
			if !m.ok(c, p.num) || !m.ok(c, p.den) {
				continue
			}
			row := []string{c.String(), p.num + " / " + p.den}
			for _, col := range cols {
				row = append(row, ratio(ratioOverRounds(m.cell(c, p.num), m.cell(c, p.den), col)))
			}
			t.add(row...)
		}
	}
	t.write(w)
}

// notes lists what did not run and why.
func notes(w io.Writer, missing, errs map[string]string) {
	for _, k := range sortedKeys(missing) {
		fmt.Fprintf(w, "* Not run: `%s`: %s.\n", k, missing[k])
	}
	for _, k := range sortedKeys(errs) {
		fmt.Fprintf(w, "* Failed: `%s`: %s\n", k, clip(errs[k]))
	}
	if len(missing)+len(errs) > 0 {
		fmt.Fprintln(w)
	}
}

func clip(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > maxErrLen {
		s = s[:maxErrLen] + "…"
	}
	return "`" + strings.ReplaceAll(s, "`", "'") + "`"
}

func suiteList(w io.Writer, names []string) {
	for _, n := range names {
		if s, ok := suites[n]; ok {
			fmt.Fprintf(w, "* `%s`: %s\n", n, s.desc)
		}
	}
	fmt.Fprintln(w)
}

func roundsNote(m *matrix) string {
	seen := map[int][]string{}
	var order []int
	for _, c := range m.Cfgs {
		r := m.Rounds[c]
		if _, ok := seen[r]; !ok {
			order = append(order, r)
		}
		seen[r] = append(seen[r], c.String())
	}
	var parts []string
	for _, r := range order {
		parts = append(parts, fmt.Sprintf("%d at %s", r, strings.Join(seen[r], ", ")))
	}
	return "Rounds: " + strings.Join(parts, "; ") + "."
}

var (
	latencyCols      = []metric{mAddP50, mAddP95, mDelP50, mDelP95, mAddWall, mDelWall, mAddRate, mAddCPU}
	latencyRatioCols = []metric{mAddP50, mAddP95, mDelP50, mAddWall, mDelWall, mAddCPU}
	memoryCols       = []metric{mAddRSS, mDelRSS}
)

func writeReport(w io.Writer, r *results) {
	writeMethod(w, r)
	writeKeyRatios(w, r)
	if m := r.Latency; m != nil {
		fmt.Fprintf(w, "## cni-latency: ADD all, then DEL all\n\n")
		suiteList(w, m.Suites)
		fmt.Fprintf(w, "%s Times in ms, walls in s; CPU is the plugin processes' user+system time per operation (median).\n\n", roundsNote(m))
		cellTable(w, m, latencyCols)
		fmt.Fprintf(w, "Ratios (median of the per-round ratios; below 1 means the numerator is faster):\n\n")
		ratioTable(w, m, latencyRatioCols)
		if m.Note != "" {
			fmt.Fprintf(w, "%s\n\n", m.Note)
		}
		notes(w, m.Missing, m.Errs)
	}
	if r.Growth != nil {
		writeGrowth(w, r.Growth, r.SVGName)
	}
	if m := r.Macvlan; m != nil {
		fmt.Fprintf(w, "## macvlan (parent: veth `%s` in the plugins' private host netns)\n\n", macvlanParent)
		suiteList(w, m.Suites)
		fmt.Fprintf(w, "%s\n\n", roundsNote(m))
		cellTable(w, m, latencyCols)
		ratioTable(w, m, latencyRatioCols)
		notes(w, m.Missing, m.Errs)
	}
	if r.IPAM != nil {
		writeIPAM(w, r.IPAM, r.Opts)
	}
	if m := r.Memory; m != nil {
		fmt.Fprintf(w, "## Peak memory of one invocation\n\n")
		fmt.Fprintf(w, "Max RSS of the operation's plugin processes (the largest one; children such as host-local and iptables "+
			"count through their parent's wait4), taken by running each plugin under GNU time, which forks it from a process "+
			"of about 1 MiB (the harness's own vfork would fold its size into the child's ru_maxrss). Median over %d ADDs "+
			"(then DELs) per round. %s\n\n", m.Cfgs[0].N, roundsNote(m))
		cellTable(w, m, memoryCols)
		ratioTable(w, m, memoryCols)
		notes(w, m.Missing, m.Errs)
	}
	if r.Exec != nil {
		writeExec(w, r.Exec, r.Opts)
	}
}

func writeMethod(w io.Writer, r *results) {
	o := r.Opts
	fmt.Fprintf(w, "## Method\n\n")
	if o.Quick {
		fmt.Fprintf(w, "**QUICK run: tiny sizes, the numbers mean nothing.**\n\n")
	}
	fmt.Fprintf(w, `* scripts/cnibench drives every plugin through libcni, as a runtime does: config on stdin with
  name, cniVersion (%s), prevResult and runtimeConfig injected; the conflist in order for ADD and in
  reverse for DEL, DEL getting libcni's cached ADD result. Per-operation latency runs from the fork of
  the first plugin of the chain to the exit of the last; CPU and peak RSS come from wait4.
* The plugins' host side is a private netns created for every suite run (empty bridge, firewall
  and IPAM state); every container gets a fresh netns, created and removed outside the timings.
  IPAM state lives under %s (the temp dir).
* Suites run interleaved A/B/A/B in each round; tables give the median over rounds, ratios are
  computed per round and then the median is taken. After each run the harness waits %s + %s per
  container for the kernel's asynchronous teardown.
* The machine is shared: absolute numbers drift by about 30%% between runs, ratios within a run by
  about 10%%. Compare ratios.
* Reference: %s, in the run's work directory (%s/). moor: static, stripped binaries from
  scripts/build.sh (%s/). moor's firewall backend is its default (nftables through netlink) unless a
  suite says otherwise; the reference uses iptables.

Run took %s.

`, cniVersion, osTempDir(), o.Settle, o.SettlePerCtr, o.RefDesc, filepath.Base(o.RefBin), filepath.Base(o.MoorBin), r.Finished.Sub(r.Started).Round(1e9))
}

func writeExec(w io.Writer, rows []execRow, o options) {
	fmt.Fprintf(w, "## Exec floor: `CNI_COMMAND=VERSION`\n\n")
	fmt.Fprintf(w, "%d execs per binary and round, %d rounds; the cost of starting the process and nothing else.\n\n", o.ExecSamples, o.Rounds)
	t := &table{head: []string{"binary", "p50 ms", "CPU ms", "peak RSS MiB", "size MiB"}, textCols: 1}
	missing := map[string]string{}
	for _, r := range rows {
		if r.Missing != "" {
			missing[r.Binary] = r.Missing
			continue
		}
		t.add(r.Binary, num(r.P50, 2), num(r.CPU, 2), num(r.RSS/kibPerMiB, 1), num(float64(r.Size)/(kibPerMiB*kibPerMiB), 1))
	}
	t.write(w)
	notes(w, missing, nil)
}
