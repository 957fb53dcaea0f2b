package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
)

// host-local's on-disk format (plugins/ipam/host-local/backend/disk): one file per
// address named after it, holding "<container id>\r\n<ifname>", and the round-robin
// cursor of range set 0.
const (
	hostLocalLineBreak = "\r\n"
	hostLocalLastFile  = "last_reserved_ip.0"
	fillWorkers        = 8
	fillRetries        = 5
	fillRetryWait      = 50 * time.Millisecond
	codeTryAgainLater  = 11
)

// ipamResult is the ipam scenario: per level and suite, the rounds of probe ADD/DELs.
type ipamResult struct {
	Levels  []int
	Suites  []string
	Runs    map[string][]*runStats // by ipamKey
	Fill    map[string]float64     // seconds to fill up to the level, by ipamKey
	Errs    map[string]string      // by suite
	Missing map[string]string      // by suite
	Notes   []string
}

func ipamKey(level int, suite string) string { return fmt.Sprintf("%d/%s", level, suite) }

// ipamDriver execs one IPAM plugin as a runtime would, through libcni with a
// host-local-shaped network config, from the scenario's private host netns.
type ipamDriver struct {
	name   string
	cni    *libcni.CNIConfig
	conf   *libcni.PluginConfig
	host   ns.NetNS
	ctr    ns.NetNS
	filled int
	limit  int // highest level measured; 0: every level
	fill   func(ctx context.Context, d *ipamDriver, from, to int) error
}

// over reports whether level is beyond what the driver measures.
func (d *ipamDriver) over(level int) bool { return d.limit > 0 && level > d.limit }

func (d *ipamDriver) rt(id string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: id, NetNS: d.ctr.Path(), IfName: ifName}
}

func (d *ipamDriver) add(ctx context.Context, id string) (sample, error) {
	t := newTimer()
	_, err := d.cni.AddNetwork(withTimer(ctx, t), d.conf, d.rt(id))
	return t.sample(), err
}

func (d *ipamDriver) del(ctx context.Context, id string) (sample, error) {
	t := newTimer()
	err := d.cni.DelNetwork(withTimer(ctx, t), d.conf, d.rt(id))
	return t.sample(), err
}

func newIPAMDriver(env *runEnv, ctr ns.NetNS, name, typ string, store map[string]any) (*ipamDriver, error) {
	dir, err := env.lab.dir(name)
	if err != nil {
		return nil, err
	}
	ipam := map[string]any{"type": typ, "ranges": [][]map[string]any{{{"subnet": subnet}}}, "dataDir": dir}
	if store != nil {
		ipam["store"] = store
	}
	raw, err := json.Marshal(map[string]any{"cniVersion": cniVersion, "name": networkName, "type": typ, "ipam": ipam})
	if err != nil {
		return nil, err
	}
	conf, err := libcni.NetworkPluginConfFromBytes(raw)
	if err != nil {
		return nil, err
	}
	d := &ipamDriver{name: name, conf: conf, host: env.host, ctr: ctr, fill: fillByExec,
		cni: libcni.NewCNIConfigWithCacheDir(env.path, filepath.Join(dir, "cache"), env.exec)}
	if typ == refHostLocal {
		d.fill = func(_ context.Context, d *ipamDriver, from, to int) error {
			return fillHostLocalFiles(filepath.Join(dir, networkName), from, to)
		}
	}
	return d, nil
}

// fillID names the filler attachment number i.
func fillID(i int) string { return fmt.Sprintf("fill-%06d", i) }

// fillHostLocalFiles writes the reservations host-local would have written for fillers
// [from,to): the state of to-from ADDs, without their O(n²) cost (host-local reads every
// reservation on every ADD), which would make a 10000 level take minutes.
func fillHostLocalFiles(dir string, from, to int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for i := from; i < to; i++ {
		ip := nthAddr(firstCtrIndex + i).String()
		if err := os.WriteFile(filepath.Join(dir, ip), []byte(fillID(i)+hostLocalLineBreak+ifName), 0o644); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(dir, hostLocalLastFile), []byte(nthAddr(firstCtrIndex+to-1).String()), 0o644)
}

// fillByExec ADDs fillers [from,to) through the plugin, fillWorkers at a time from the
// host netns (where etcd listens), retrying "try again later" answers (lock contention).
func fillByExec(ctx context.Context, d *ipamDriver, from, to int) error {
	_, err := inParallel(ctx, d.host, fillWorkers, to-from, func(i int) error {
		var err error
		for try := 0; try < fillRetries; try++ {
			if _, err = d.add(ctx, fillID(from+i)); !isTryAgain(err) {
				break
			}
			time.Sleep(fillRetryWait)
		}
		if err != nil {
			return fmt.Errorf("filling %s: %w", fillID(from+i), err)
		}
		return nil
	})
	return err
}

func isTryAgain(err error) bool {
	var e *types.Error
	return errors.As(err, &e) && e.Code == codeTryAgainLater
}

// ipam measures each IPAM plugin's ADD and DEL at growing numbers of allocations in one
// /16: reference host-local, moor-ipam with its local store, and moor-ipam on etcd.
func (b *bench) ipam(ctx context.Context) (res *ipamResult, err error) {
	res = &ipamResult{Levels: b.o.IPAMLevels, Runs: map[string][]*runStats{}, Fill: map[string]float64{},
		Errs: map[string]string{}, Missing: map[string]string{}}
	path, err := b.path()
	if err != nil {
		return nil, err
	}
	host, err := b.lab.newHost()
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, b.lab.dropNetns(host)) }()
	ctr, err := b.lab.newNetns(ctrPrefix)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, b.lab.dropNetns(ctr)) }()
	env := &runEnv{lab: b.lab, host: host, path: path}

	var drivers []*ipamDriver
	addDriver := func(name, typ string, store map[string]any) error {
		res.Suites = append(res.Suites, name)
		if why := (suite{needs: []string{typ}}).missing(&b.o); why != "" {
			res.Missing[name] = why
			return nil
		}
		d, err := newIPAMDriver(env, ctr, name, typ, store)
		if err == nil {
			drivers = append(drivers, d)
		}
		return err
	}
	if err := addDriver(sRefHostLocal, refHostLocal, nil); err != nil {
		return nil, err
	}
	if err := addDriver(sMoorIPAM, moorIPAMBinary, nil); err != nil {
		return nil, err
	}
	endpoint, stopEtcd, etcdErr := b.startEtcd(host)
	if etcdErr != nil {
		res.Suites = append(res.Suites, sMoorIPAMEtcd)
		res.Missing[sMoorIPAMEtcd] = "etcd did not start: " + etcdErr.Error()
	} else {
		defer stopEtcd()
		store := map[string]any{"type": "etcd", "endpoints": []string{endpoint}}
		if err := addDriver(sMoorIPAMEtcd, moorIPAMBinary, store); err != nil {
			return nil, err
		}
		if b.o.IPAMEtcdMax > 0 && len(drivers) > 0 && drivers[len(drivers)-1].name == sMoorIPAMEtcd {
			drivers[len(drivers)-1].limit = b.o.IPAMEtcdMax
			res.Notes = append(res.Notes, fmt.Sprintf("`%s` is measured up to %d allocations (filling etcd by exec is the slowest part of the run; cnibench -ipam-etcd-max 0 measures every level).", sMoorIPAMEtcd, b.o.IPAMEtcdMax))
		}
	}

	for _, level := range res.Levels {
		for _, d := range drivers {
			if _, failed := res.Errs[d.name]; failed || d.filled >= level || d.over(level) {
				continue
			}
			b.logf("ipam: filling %s to %d", d.name, level)
			start := time.Now()
			if err := d.fill(ctx, d, d.filled, level); err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				res.Errs[d.name] = err.Error()
				continue
			}
			res.Fill[ipamKey(level, d.name)] = time.Since(start).Seconds()
			d.filled = level
		}
		err := host.Do(func(ns.NetNS) error { return b.ipamRounds(ctx, res, drivers, level) })
		if err != nil {
			return nil, err
		}
	}
	return res, nil
}

// ipamRounds probes every driver at one level, rounds interleaved: each probe ADDs a new
// attachment and DELs it, so the level stays put. A warm-up pair precedes the timings.
func (b *bench) ipamRounds(ctx context.Context, res *ipamResult, drivers []*ipamDriver, level int) error {
	for r := 0; r < b.o.Rounds; r++ {
		for _, d := range drivers {
			if _, failed := res.Errs[d.name]; failed || d.over(level) {
				continue
			}
			b.logf("ipam round %d/%d: %s at %d", r+1, b.o.Rounds, d.name, level)
			run := &runResult{}
			var err error
			for k := -1; k < b.o.IPAMProbes && err == nil; k++ {
				id := fmt.Sprintf("probe-%d-%d-%d", level, r, k)
				var a, x sample
				if a, err = d.add(ctx, id); err != nil {
					break
				}
				if x, err = d.del(ctx, id); err != nil || k < 0 {
					continue
				}
				run.Add, run.Del = append(run.Add, a), append(run.Del, x)
				run.AddWall += a.Dur
				run.DelWall += x.Dur
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var st *runStats
			if err != nil {
				res.Errs[d.name] = fmt.Sprintf("at %d allocations: %v", level, err)
			} else {
				st = statsOf(run)
			}
			k := ipamKey(level, d.name)
			res.Runs[k] = append(res.Runs[k], st)
		}
	}
	return nil
}
