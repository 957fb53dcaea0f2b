package main

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
)

const (
	tenths      = 10
	edgeOps     = 50 // "first 50" and "last 50" of the growth run
	growthRound = 2  // decimals for growth medians
)

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func osTempDir() string { return os.TempDir() }

// edge is how many ADDs "first"/"last" cover: 50, or a tenth of a shorter run.
func edge(n int) int { return max(1, min(edgeOps, n/tenths)) }

// growthMetrics: wall-time medians of the first and last ADDs and per tenth, and the
// plugins' CPU of the first and last ADDs (user+system of the chain's processes: what
// grows with the network in moor's own work, less sensitive than wall time to a busy
// machine; kernel work done on other CPUs or in the DNS sidecar is not in it).
func growthMetrics(n int) (first, last, lastOverFirst, cpuFirst, cpuLast metric, tenth []metric) {
	k := edge(n)
	first = metric{fmt.Sprintf("first %d ms", k), growthRound, func(s *runStats) float64 { return median(s.add[:k]) }}
	last = metric{fmt.Sprintf("last %d ms", k), growthRound, func(s *runStats) float64 { return median(s.add[len(s.add)-k:]) }}
	lastOverFirst = metric{"last/first", growthRound, func(s *runStats) float64 { return last.get(s) / first.get(s) }}
	cpuFirst = metric{fmt.Sprintf("CPU first %d ms", k), growthRound, func(s *runStats) float64 { return median(s.addCPU[:k]) }}
	cpuLast = metric{fmt.Sprintf("CPU last %d ms", k), growthRound, func(s *runStats) float64 { return median(s.addCPU[len(s.addCPU)-k:]) }}
	for t := 0; t < tenths; t++ {
		t := t
		tenth = append(tenth, metric{strconv.Itoa(t + 1), 1, func(s *runStats) float64 { return median(parts(s.add, tenths)[t]) }})
	}
	return first, last, lastOverFirst, cpuFirst, cpuLast, tenth
}

func writeGrowth(w io.Writer, m *matrix, svgName string) {
	c := m.Cfgs[0]
	first, last, lof, cpuFirst, cpuLast, tenth := growthMetrics(c.N)
	fmt.Fprintf(w, "## ADD latency growth: %d serial ADDs into one /16\n\n", c.N)
	fmt.Fprintf(w, "%s Median ADD in ms, overall and per tenth of the run (1st → 10th); then every container is deleted.\n\n", roundsNote(m))
	t := &table{head: []string{"suite", first.name, last.name, "last/first", "median per tenth (1st → 10th)", cpuFirst.name, cpuLast.name, "ADD wall s", "DEL wall s", "DEL p50 ms"}, textCols: 1}
	for _, s := range m.Suites {
		rs := m.cell(c, s)
		if !m.ok(c, s) {
			continue
		}
		var ts []string
		for _, tm := range tenth {
			ts = append(ts, num(overRounds(rs, tm), tm.prec))
		}
		t.add(s, num(overRounds(rs, first), 2), num(overRounds(rs, last), 2), ratio(overRounds(rs, lof)),
			strings.Join(ts, " "), num(overRounds(rs, cpuFirst), 2), num(overRounds(rs, cpuLast), 2), num(overRounds(rs, mAddWall), 2), num(overRounds(rs, mDelWall), 2), num(overRounds(rs, mDelP50), 2))
	}
	t.write(w)
	ratioTable(w, m, []metric{first, last, cpuFirst, cpuLast, mAddWall, mDelWall, mDelP50})
	if svgName != "" {
		fmt.Fprintf(w, "![ADD latency against containers already attached](%s)\n\n", svgName)
	}
	notes(w, m.Missing, m.Errs)
}

var (
	ipamCols      = []metric{mAddP50, mAddP95, mDelP50, mDelP95, mAddCPU, mDelCPU}
	ipamRatioCols = []metric{mAddP50, mDelP50, mAddCPU, mDelCPU}
	ipamPairs     = []pair{{sMoorIPAM, sRefHostLocal}, {sMoorIPAMEtcd, sRefHostLocal}, {sMoorIPAMEtcd, sMoorIPAM}}
)

func writeIPAM(w io.Writer, r *ipamResult, o options) {
	fmt.Fprintf(w, "## IPAM alone: one ADD and one DEL at a number of allocations already made\n\n")
	fmt.Fprintf(w, "Each plugin exec'd by libcni with a host-local-shaped config (`ranges: [[{subnet: %s}]]`); "+
		"each probe ADDs a new attachment and DELs it, %d probes per level, suite and round, %d rounds. "+
		"host-local's earlier allocations are written as its own reservation files (what as many ADDs would leave; "+
		"filling 10000 by exec is O(n²) because host-local reads every file on every ADD); moor-ipam's are made by exec'd ADDs, "+
		"%d at a time (fill s). moor-ipam-etcd talks to a single local etcd (Debian's) on loopback.\n\n",
		subnet, o.IPAMProbes, o.Rounds, fillWorkers)
	t := &table{head: append([]string{"allocations", "suite"}, append(metricNames(ipamCols), "fill s")...), textCols: 2}
	for _, l := range r.Levels {
		for _, s := range r.Suites {
			rs := r.Runs[ipamKey(l, s)]
			if len(rs) == 0 || rs[0] == nil {
				continue
			}
			row := []string{strconv.Itoa(l), s}
			for _, col := range ipamCols {
				row = append(row, num(overRounds(rs, col), col.prec))
			}
			fill, ok := r.Fill[ipamKey(l, s)]
			if !ok {
				fill = nan()
			}
			t.add(append(row, num(fill, 2))...)
		}
	}
	t.write(w)
	rt := &table{head: append([]string{"allocations", "ratio"}, metricNames(ipamRatioCols)...), textCols: 2, optional: true}
	for _, l := range r.Levels {
		for _, p := range ipamPairs {
			a, b := r.Runs[ipamKey(l, p.num)], r.Runs[ipamKey(l, p.den)]
			if len(a) == 0 || len(b) == 0 {
				continue
			}
			row := []string{strconv.Itoa(l), p.num + " / " + p.den}
			for _, col := range ipamRatioCols {
				row = append(row, ratio(ratioOverRounds(a, b, col)))
			}
			rt.add(row...)
		}
	}
	rt.write(w)
	notes(w, r.Missing, r.Errs)
	for _, n := range r.Notes {
		fmt.Fprintf(w, "* %s\n", n)
	}
}

// writeKeyRatios is the summary: moor over the reference for the headline numbers.
func writeKeyRatios(w io.Writer, r *results) {
	fmt.Fprintf(w, "## Key ratios (moor / reference; below 1 means moor is faster or smaller)\n\n")
	t := &table{head: []string{"comparison", "where", "ratio"}, textCols: 2}
	if m := r.Latency; m != nil {
		keyCells(t, m, mAddP50, mDelP50, mAddWall, mDelWall, mAddCPU)
	}
	if m := r.Latency; m != nil {
		shapingAdded(t, m)
	}
	if m := r.Growth; m != nil {
		c := m.Cfgs[0]
		first, last, _, _, _, _ := growthMetrics(c.N)
		for _, p := range m.Pairs[:1] {
			if m.ok(c, p.num) && m.ok(c, p.den) {
				for _, col := range []metric{first, last} {
					t.add(fmt.Sprintf("%s / %s, ADD %s", p.num, p.den, strings.TrimSuffix(col.name, " ms")), fmt.Sprintf("growth run of %d", c.N),
						ratio(ratioOverRounds(m.cell(c, p.num), m.cell(c, p.den), col)))
				}
			}
		}
	}
	if m := r.Macvlan; m != nil {
		keyCells(t, m, mAddP50, mDelP50)
	}
	if ip := r.IPAM; ip != nil {
		for _, col := range []metric{mAddP50, mDelP50} {
			var cells []string
			for _, l := range ip.Levels {
				a, b := ip.Runs[ipamKey(l, sMoorIPAM)], ip.Runs[ipamKey(l, sRefHostLocal)]
				if len(a) > 0 && len(b) > 0 {
					cells = append(cells, fmt.Sprintf("%d: %s", l, ratio(ratioOverRounds(a, b, col))))
				}
			}
			if len(cells) > 0 {
				t.add(fmt.Sprintf("%s / %s, %s", sMoorIPAM, sRefHostLocal, col.name), "allocations", strings.Join(cells, ", "))
			}
		}
	}
	if m := r.Memory; m != nil {
		keyCells(t, m, mAddRSS)
	}
	t.write(w)
}

// shapingAdded adds the row of what shaping adds to an ADD: (moor-bridge-bandwidth −
// moor-bridge) over (ref-bridge-bandwidth − ref-bridge), per round, at every size.
func shapingAdded(t *table, m *matrix) {
	for _, col := range []metric{mAddP50, mAddCPU} {
		var cells []string
		for _, c := range m.Cfgs {
			if m.ok(c, sMoorBandwidth) && m.ok(c, sMoorBridge) && m.ok(c, sRefBandwidth) && m.ok(c, sRefBridge) {
				v := addedOverRounds(m.cell(c, sMoorBandwidth), m.cell(c, sMoorBridge), m.cell(c, sRefBandwidth), m.cell(c, sRefBridge), col)
				cells = append(cells, fmt.Sprintf("%s: %s", c, ratio(v)))
			}
		}
		if len(cells) > 0 {
			t.add(fmt.Sprintf("what shaping adds, moor / reference (%s − %s over %s − %s), %s", sMoorBandwidth, sMoorBridge, sRefBandwidth, sRefBridge, col.name),
				m.Title+" N×workers", strings.Join(cells, ", "))
		}
	}
}

// keyCells adds, for each pair of m and each column, one row with the ratio at every size.
func keyCells(t *table, m *matrix, cols ...metric) {
	for _, p := range m.Pairs {
		for _, col := range cols {
			var cells []string
			for _, c := range m.Cfgs {
				if m.ok(c, p.num) && m.ok(c, p.den) {
					cells = append(cells, fmt.Sprintf("%s: %s", c, ratio(ratioOverRounds(m.cell(c, p.num), m.cell(c, p.den), col))))
				}
			}
			if len(cells) > 0 {
				t.add(fmt.Sprintf("%s / %s, %s", p.num, p.den, col.name), m.Title+" N×workers", strings.Join(cells, ", "))
			}
		}
	}
}
