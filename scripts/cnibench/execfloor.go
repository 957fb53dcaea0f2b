package main

import (
	"context"
	"os"
)

// execRow is one binary's exec floor: CNI_COMMAND=VERSION, which starts the process,
// parses the config and prints the versions, and nothing else.
type execRow struct {
	Binary  string
	P50     float64 // ms, median over rounds of the round's median
	CPU     float64 // ms
	RSS     float64 // KiB
	Size    int64   // bytes on disk
	Missing string
}

var (
	execRefBinaries  = []string{"loopback", "bridge", refHostLocal, "portmap", "macvlan", "dnsname"}
	execMoorBinaries = []string{"moor-none", "moor-bridge", moorIPAMBinary, "moor-macvlan", "moor-dns"}
)

const versionStdin = `{"cniVersion":"` + cniVersion + `"}`

// execFloor execs each binary ExecSamples times per round, binaries interleaved.
func (b *bench) execFloor(ctx context.Context) ([]execRow, error) {
	var rows []execRow
	var paths []string
	for _, name := range append(append([]string{}, execRefBinaries...), execMoorBinaries...) {
		row := execRow{Binary: name, Missing: suite{needs: []string{name}}.missing(&b.o)}
		p := b.o.binPath(name)
		if st, err := os.Stat(p); err == nil {
			row.Size = st.Size()
		}
		rows = append(rows, row)
		paths = append(paths, p)
	}
	env := append(os.Environ(), "CNI_COMMAND=VERSION")
	perRound := make([][]float64, len(rows))
	cpu := make([][]float64, len(rows))
	rss := make([][]float64, len(rows))
	for r := 0; r < b.o.Rounds; r++ {
		for i := range rows {
			if rows[i].Missing != "" {
				continue
			}
			var durs []float64
			for k := 0; k < b.o.ExecSamples; k++ {
				t := newTimer()
				if _, err := (timedExec{}).ExecPlugin(withTimer(ctx, t), paths[i], []byte(versionStdin), env); err != nil {
					if ctx.Err() != nil {
						return nil, ctx.Err()
					}
					rows[i].Missing = "VERSION failed: " + err.Error()
					break
				}
				s := t.sample()
				durs = append(durs, ms(s.Dur))
				cpu[i] = append(cpu[i], ms(s.CPU))
			}
			perRound[i] = append(perRound[i], median(durs))
			t := newTimer()
			if _, err := (timedExec{rssVia: b.timeBin}).ExecPlugin(withTimer(ctx, t), paths[i], []byte(versionStdin), env); err == nil {
				if s := t.sample(); s.MaxRSS >= 0 {
					rss[i] = append(rss[i], float64(s.MaxRSS))
				}
			}
		}
	}
	for i := range rows {
		rows[i].P50 = median(perRound[i])
		rows[i].CPU = median(cpu[i])
		rows[i].RSS = median(rss[i])
	}
	return rows, nil
}
