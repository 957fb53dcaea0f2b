package runtimes

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// envPodman5Samples overrides how many containers p5SetupTime runs per network.
const (
	envPodman5Samples = "MOOR_PODMAN5_SAMPLES"
	defaultSamples    = 20
	timesFile         = "netavark-times"
)

// netavarkWrapper stands in for netavark (first in helper_binaries_dir): it runs the
// real one and appends "<command> <nanoseconds>" to timesFile for setup and teardown.
const netavarkWrapper = `#!/bin/sh
cmd=
for a; do case $a in setup|teardown) cmd=$a ;; esac; done
[ -n "$cmd" ] || exec /usr/lib/podman/netavark "$@"
s=$(date +%s%N)
/usr/lib/podman/netavark "$@"
rc=$?
e=$(date +%s%N)
echo "$cmd $((e - s))" >>` + p5Dir + `/` + timesFile + `
exit $rc
`

// p5SetupTime measures, in one run and alternating between the two, what a container's
// network costs with moor-bridge (moor-netavark) and with netavark's own bridge: the
// duration of netavark's setup and teardown commands (which run the plugin, or
// netavark's bridge driver and aardvark-dns) and of a whole `podman run --rm ... true`.
// It reports medians (go test -v); it asserts only that every run works.
func p5SetupTime(t *testing.T) {
	watchHost(t)
	p := newPodman5(t)
	helpers := filepath.Join(p.dir, "helpers")
	if err := os.MkdirAll(helpers, dirMode); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(helpers, "netavark"), []byte(netavarkWrapper), execMode); err != nil {
		t.Fatal(err)
	}
	samples := defaultSamples
	if v, err := strconv.Atoi(os.Getenv(envPodman5Samples)); err == nil && v > 0 {
		samples = v
	}
	drivers := []string{"moor-bridge", "bridge"}
	nets := map[string]*p5Net{}
	for _, d := range drivers {
		nets[d] = newP5Net(t)
		p.create(nets[d], d)
	}
	type series struct{ setup, teardown, run []time.Duration }
	got := map[string]*series{}
	for _, d := range drivers {
		got[d] = &series{}
	}
	for i := 0; i < samples; i++ {
		for _, d := range drivers {
			start := time.Now()
			p.must("run", "--rm", "--network", nets[d].Name, busyboxImage, "true")
			got[d].run = append(got[d].run, time.Since(start))
		}
	}
	lines, err := os.ReadFile(filepath.Join(p.dir, timesFile))
	if err != nil {
		t.Fatalf("the netavark wrapper recorded nothing: %v", err)
	}
	// The wrapper's lines come in the order of the runs: setup, teardown per container.
	var cmds []string
	var durs []time.Duration
	for _, l := range strings.Split(strings.TrimSpace(string(lines)), "\n") {
		var cmd string
		var ns int64
		if _, err := fmt.Sscan(l, &cmd, &ns); err != nil {
			t.Fatalf("wrapper line %q: %v", l, err)
		}
		cmds, durs = append(cmds, cmd), append(durs, time.Duration(ns))
	}
	if len(cmds) != 2*samples*len(drivers) {
		t.Fatalf("%d netavark calls recorded, want %d (a setup and a teardown per container)", len(cmds), 2*samples*len(drivers))
	}
	for i := 0; i < len(cmds); i += 2 {
		d := drivers[(i/2)%len(drivers)]
		if cmds[i] != "setup" || cmds[i+1] != "teardown" {
			t.Fatalf("netavark calls %d, %d: %s, %s, want setup, teardown", i, i+1, cmds[i], cmds[i+1])
		}
		got[d].setup = append(got[d].setup, durs[i])
		got[d].teardown = append(got[d].teardown, durs[i+1])
	}
	for _, d := range drivers {
		s := got[d]
		t.Logf("%-12s median of %d: netavark setup %v, teardown %v, podman run --rm %v",
			d, samples, median(s.setup), median(s.teardown), median(s.run))
	}
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2].Round(time.Millisecond / 10)
	}
	return ((s[len(s)/2-1] + s[len(s)/2]) / 2).Round(time.Millisecond / 10)
}
