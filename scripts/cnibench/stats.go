package main

import (
	"math"
	"sort"
	"time"
)

// Percentiles the tables report.
const (
	p50 = 0.50
	p95 = 0.95
)

// quantile of v (linear interpolation between closest ranks); NaN for no data.
func quantile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	pos := q * float64(len(s)-1)
	lo := int(math.Floor(pos))
	hi := int(math.Ceil(pos))
	return s[lo] + (s[hi]-s[lo])*(pos-float64(lo))
}

func median(v []float64) float64 { return quantile(v, p50) }

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// runStats are the numbers of one suite run, in the units the tables print.
type runStats struct {
	AddP50, AddP95, DelP50, DelP95 float64   // ms
	AddWall, DelWall               float64   // s
	AddRate                        float64   // ADDs per second of ADD wall time
	AddCPU, DelCPU                 float64   // ms of plugin CPU per op, median
	AddRSS, DelRSS                 float64   // KiB, median over ops of the op's peak RSS
	add, addCPU                    []float64 // per ADD in order: ms of wall time, ms of CPU
}

func durations(s []sample) (dur, cpu, rss []float64) {
	for _, x := range s {
		dur = append(dur, ms(x.Dur))
		cpu = append(cpu, ms(x.CPU))
		if x.MaxRSS >= 0 {
			rss = append(rss, float64(x.MaxRSS))
		}
	}
	return dur, cpu, rss
}

func statsOf(r *runResult) *runStats {
	addD, addC, addR := durations(r.Add)
	delD, delC, delR := durations(r.Del)
	st := &runStats{
		AddP50: quantile(addD, p50), AddP95: quantile(addD, p95),
		DelP50: quantile(delD, p50), DelP95: quantile(delD, p95),
		AddWall: r.AddWall.Seconds(), DelWall: r.DelWall.Seconds(),
		AddCPU: median(addC), DelCPU: median(delC),
		AddRSS: median(addR), DelRSS: median(delR),
		add: addD, addCPU: addC,
	}
	if r.AddWall > 0 {
		st.AddRate = float64(len(r.Add)) / r.AddWall.Seconds()
	}
	return st
}

// metric is one column: a name, a format and how to read it.
type metric struct {
	name string
	prec int
	get  func(*runStats) float64
}

var (
	mAddP50  = metric{"ADD p50 ms", 2, func(s *runStats) float64 { return s.AddP50 }}
	mAddP95  = metric{"ADD p95 ms", 2, func(s *runStats) float64 { return s.AddP95 }}
	mDelP50  = metric{"DEL p50 ms", 2, func(s *runStats) float64 { return s.DelP50 }}
	mDelP95  = metric{"DEL p95 ms", 2, func(s *runStats) float64 { return s.DelP95 }}
	mAddWall = metric{"ADD wall s", 2, func(s *runStats) float64 { return s.AddWall }}
	mDelWall = metric{"DEL wall s", 2, func(s *runStats) float64 { return s.DelWall }}
	mAddRate = metric{"ADD/s", 0, func(s *runStats) float64 { return s.AddRate }}
	mAddCPU  = metric{"ADD CPU ms", 2, func(s *runStats) float64 { return s.AddCPU }}
	mDelCPU  = metric{"DEL CPU ms", 2, func(s *runStats) float64 { return s.DelCPU }}
	mAddRSS  = metric{"ADD peak RSS MiB", 1, func(s *runStats) float64 { return s.AddRSS / kibPerMiB }}
	mDelRSS  = metric{"DEL peak RSS MiB", 1, func(s *runStats) float64 { return s.DelRSS / kibPerMiB }}
)

const kibPerMiB = 1024

// overRounds is the median over rounds of m (rounds that failed are nil and skipped).
func overRounds(rs []*runStats, m metric) float64 {
	var v []float64
	for _, r := range rs {
		if r != nil {
			v = append(v, m.get(r))
		}
	}
	return median(v)
}

// ratioOverRounds is the median over rounds of num/den, taking only rounds where both ran.
func ratioOverRounds(num, den []*runStats, m metric) float64 {
	var v []float64
	for i := 0; i < len(num) && i < len(den); i++ {
		if num[i] != nil && den[i] != nil && m.get(den[i]) > 0 {
			v = append(v, m.get(num[i])/m.get(den[i]))
		}
	}
	return median(v)
}

// addedOverRounds is, per round, what numWith adds to numBase over what denWith adds to
// denBase (for example what shaping adds to moor's ADD over what the reference bandwidth
// plugin adds to its chain), and the median of those quotients.
func addedOverRounds(numWith, numBase, denWith, denBase []*runStats, m metric) float64 {
	var v []float64
	for i := 0; i < len(numWith) && i < len(numBase) && i < len(denWith) && i < len(denBase); i++ {
		if numWith[i] == nil || numBase[i] == nil || denWith[i] == nil || denBase[i] == nil {
			continue
		}
		if d := m.get(denWith[i]) - m.get(denBase[i]); d > 0 {
			v = append(v, (m.get(numWith[i])-m.get(numBase[i]))/d)
		}
	}
	return median(v)
}

// parts returns n consecutive parts of v (the last ones take the remainder).
func parts(v []float64, n int) [][]float64 {
	out := make([][]float64, n)
	for k := 0; k < n; k++ {
		out[k] = v[k*len(v)/n : (k+1)*len(v)/n]
	}
	return out
}

func nan() float64 { return math.NaN() }
