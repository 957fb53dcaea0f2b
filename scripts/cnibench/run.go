package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// moorLogEnv redirects moor plugins' logs (plugins/log.go) into the run's temp dir, so
// a benchmark leaves nothing in /var/log/moor. Writing a log costs the same anywhere.
const moorLogEnv = "MOOR_LOG_FILE"

// moorRunDirEnv moves the plugins' volatile per-namespace state (firewall records, DNS
// sidecars' files) into the run's temp dir: every suite run makes its own host netns, and
// the plugins would otherwise leave a directory per namespace in the machine's
// /run/moor/netns.
const moorRunDirEnv = "MOOR_RUN_DIR"

// setenvUntilReturn sets key to value and returns the restoring of its previous state.
func setenvUntilReturn(key, value string) func() {
	prev, had := os.LookupEnv(key)
	os.Setenv(key, value)
	return func() {
		if had {
			os.Setenv(key, prev)
		} else {
			os.Unsetenv(key)
		}
	}
}

// results is everything a run measured; nil parts were not selected.
type results struct {
	Opts                             options
	Latency, Growth, Macvlan, Memory *matrix
	IPAM                             *ipamResult
	Exec                             []execRow
	Started, Finished                time.Time
	SVGName                          string
	RunID                            string // in every netns name the run made
}

func run(ctx context.Context, o options) error {
	res, err := measure(ctx, o)
	if err != nil {
		return err
	}
	if o.SVG != "" && res.Growth != nil {
		svg := growthSVG(res.Growth)
		if err := os.WriteFile(o.SVG, []byte(svg), 0o644); err != nil {
			return err
		}
		res.SVGName = filepath.Base(o.SVG)
	}
	var sb strings.Builder
	writeReport(&sb, res)
	if o.Out == "" || o.Out == "-" {
		_, err = os.Stdout.WriteString(sb.String())
		return err
	}
	return os.WriteFile(o.Out, []byte(sb.String()), 0o644)
}

// measure runs the selected scenarios. Everything it created is removed before it
// returns, whatever happened; leftovers are an error.
func measure(ctx context.Context, o options) (res *results, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("needs root (network namespaces)")
	}
	l, err := newLab()
	if err != nil {
		return nil, err
	}
	defer func() {
		err = errors.Join(err, l.Close())
		if left, lerr := l.leftovers(); lerr != nil || len(left) > 0 {
			err = errors.Join(err, lerr, fmt.Errorf("namespaces left behind: %v", left))
		}
	}()
	defer setenvUntilReturn(moorLogEnv, filepath.Join(l.tmp, "moor.log"))()
	defer setenvUntilReturn(moorRunDirEnv, filepath.Join(l.tmp, "run"))()

	b := &bench{o: o, lab: l, timeBin: findGNUTime()}
	res = &results{Opts: o, Started: time.Now(), RunID: l.id}
	for _, scen := range o.Scenarios {
		var m *matrix
		switch scen {
		case scenLatency:
			m = b.latencyMatrix()
			res.Latency = m
		case scenGrowth:
			m = b.growthMatrix()
			res.Growth = m
		case scenMacvlan:
			m = b.macvlanMatrix()
			res.Macvlan = m
		case scenMemory:
			if b.timeBin == "" {
				return nil, errors.New("the memory scenario needs GNU time (Debian package time)")
			}
			m = b.memoryMatrix()
			res.Memory = m
			if res.Exec, err = b.execFloor(ctx); err != nil {
				return nil, err
			}
		case scenIPAM:
			if res.IPAM, err = b.ipam(ctx); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("unknown scenario %q (have %s)", scen, strings.Join(allScenarios, ", "))
		}
		if m != nil {
			if err := b.runMatrix(ctx, m); err != nil {
				return nil, err
			}
		}
	}
	res.Finished = time.Now()
	return res, nil
}
