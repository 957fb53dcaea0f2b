package main

import (
	"context"
	"fmt"
)

// cfg is one cell size: N containers, W concurrent workers.
type cfg struct{ N, W int }

func (c cfg) String() string { return fmt.Sprintf("%d×%d", c.N, c.W) }

// matrix is a set of suites run at a set of sizes, rounds outermost so that every suite
// of a round runs before any suite of the next (A/B/A/B).
type matrix struct {
	Title   string
	Suites  []string
	Cfgs    []cfg
	Rounds  map[cfg]int
	Pairs   []pair
	Runs    map[string][]*runStats // by cellKey; index = round; nil = failed
	Errs    map[string]string      // by cellKey: why a suite's run failed (no later rounds)
	Missing map[string]string      // by suite: which binary is missing
	exec    timedExec              // how plugins are exec'd (RSS measured or not)
	skip    func(cfg, string) bool // cells not run at all; nil: none
	Note    string                 // printed under the tables
}

func cellKey(c cfg, suite string) string { return fmt.Sprintf("%d/%d/%s", c.N, c.W, suite) }

func newMatrix(title string, suiteNames []string, cfgs []cfg, rounds func(cfg) int, pairs []pair) *matrix {
	m := &matrix{Title: title, Suites: suiteNames, Cfgs: cfgs, Rounds: map[cfg]int{}, Pairs: pairs,
		Runs: map[string][]*runStats{}, Errs: map[string]string{}, Missing: map[string]string{}}
	for _, c := range cfgs {
		m.Rounds[c] = rounds(c)
	}
	return m
}

func product(ns, workers []int) []cfg {
	var out []cfg
	for _, n := range ns {
		for _, w := range workers {
			out = append(out, cfg{n, w})
		}
	}
	return out
}

func (b *bench) latencyMatrix() *matrix {
	m := newMatrix("cni-latency", b.o.Suites, product(b.o.Ns, b.o.Workers), func(c cfg) int {
		if c.N >= largeN {
			return b.o.LargeRounds
		}
		return b.o.Rounds
	}, latencyPairs)
	if !b.o.HeavyLarge {
		// The reference portmap chain alone takes about 7 minutes at N=500 (iptables is
		// exec'd some 20 times per operation and its cost grows with the rules).
		m.skip = func(c cfg, s string) bool { return c.N >= largeN && heavySuites[s] }
		m.Note = fmt.Sprintf("The port-publishing and shaping suites run only at N < %d (cnibench -heavy-large runs them at every N).", largeN)
	}
	return m
}

// heavySuites publish ports or shape: by default they are not run at N >= largeN.
var heavySuites = map[string]bool{sRefPortmap: true, sMoorPorts: true, sMoorPortsIPT: true, sRefDefault: true, sMoorDefault: true,
	sRefBandwidth: true, sMoorBandwidth: true}

// growthMatrix: the bridge ADD against the reference's and the floor's, and moor's default
// chain (moor-bridge + moor-dns, whose ADD registers a name the sidecar then answers) to
// show that the DNS part does not grow with the network's records. The reference's default
// chain is left out: its portmap and firewall exec iptables, whose cost grows with the
// rules, so 1,000 of its ADDs take many minutes.
func (b *bench) growthMatrix() *matrix {
	return newMatrix("growth", []string{sRefBridge, sMoorBridge, sFloor, sMoorDefault}, []cfg{{b.o.GrowthN, 1}},
		func(cfg) int { return b.o.GrowthRounds }, []pair{{sMoorBridge, sRefBridge}, {sFloor, sRefBridge}, {sMoorBridge, sFloor}, {sMoorDefault, sFloor}})
}

func (b *bench) macvlanMatrix() *matrix {
	return newMatrix("macvlan", []string{sRefMacvlan, sMoorMacvlan}, product([]int{b.o.MacvlanN}, b.o.MacvlanWorkers),
		func(cfg) int { return b.o.Rounds }, []pair{{sMoorMacvlan, sRefMacvlan}})
}

func (b *bench) memoryMatrix() *matrix {
	m := newMatrix("memory", []string{sRefBridge, sMoorBridge, sRefPortmap, sMoorPorts, sRefDefault, sMoorDefault}, []cfg{{b.o.MemSamples, 1}},
		func(cfg) int { return b.o.Rounds }, []pair{{sMoorBridge, sRefBridge}, {sMoorPorts, sRefPortmap}, {sMoorDefault, sRefDefault}})
	m.exec = timedExec{rssVia: b.timeBin}
	return m
}

// runMatrix runs every round of every cell. A suite whose binary is missing is recorded
// and skipped; one whose run fails is recorded and not run again at that size.
func (b *bench) runMatrix(ctx context.Context, m *matrix) error {
	var runnable []suite
	for _, name := range m.Suites {
		s, ok := suites[name]
		if !ok {
			return fmt.Errorf("%s: unknown suite %q", m.Title, name)
		}
		if why := s.missing(&b.o); why != "" {
			m.Missing[name] = why
			b.logf("%s: skipping %s: %s", m.Title, name, why)
			continue
		}
		runnable = append(runnable, s)
	}
	maxRounds := 0
	for _, r := range m.Rounds {
		maxRounds = max(maxRounds, r)
	}
	for r := 0; r < maxRounds; r++ {
		for _, c := range m.Cfgs {
			if r >= m.Rounds[c] {
				continue
			}
			for _, s := range runnable {
				k := cellKey(c, s.name)
				if _, failed := m.Errs[k]; failed || (m.skip != nil && m.skip(c, s.name)) {
					continue
				}
				b.logf("%s round %d/%d: %s N=%d workers=%d", m.Title, r+1, m.Rounds[c], s.name, c.N, c.W)
				res, err := b.runOnce(ctx, s, c.N, c.W, m.exec)
				if ctx.Err() != nil {
					return ctx.Err()
				}
				var st *runStats
				if err != nil {
					m.Errs[k] = err.Error()
					b.logf("%s: %s at %s failed: %v", m.Title, s.name, c, err)
				} else {
					st = statsOf(res)
				}
				m.Runs[k] = append(m.Runs[k], st)
				b.settle(ctx, c.N)
			}
		}
	}
	return nil
}

// cell is the per-round stats of one suite at one size.
func (m *matrix) cell(c cfg, suite string) []*runStats { return m.Runs[cellKey(c, suite)] }

// ok reports whether the suite has at least one successful round at c.
func (m *matrix) ok(c cfg, suite string) bool {
	for _, r := range m.cell(c, suite) {
		if r != nil {
			return true
		}
	}
	return false
}
