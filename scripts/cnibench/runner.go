package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// runResult is one suite run: N containers added, then deleted.
type runResult struct {
	Add, Del         []sample // by container index
	AddWall, DelWall time.Duration
}

// bench is one invocation of the harness.
type bench struct {
	o       options
	lab     *lab
	timeBin string // GNU time, for peak RSS; "" when absent
}

func (b *bench) logf(format string, args ...any) {
	if b.o.Log != nil {
		fmt.Fprintf(b.o.Log, format+"\n", args...)
	}
}

func (b *bench) path() ([]string, error) {
	moor, err := filepath.Abs(b.o.MoorBin)
	if err != nil {
		return nil, err
	}
	return []string{moor, b.o.RefBin}, nil
}

// newRun makes a fresh private host netns and data dir and starts the suite's driver in
// them. The returned cleanup removes the host netns.
func (b *bench) newRun(s suite, ex timedExec) (driver, *runEnv, func() error, error) {
	path, err := b.path()
	if err != nil {
		return nil, nil, nil, err
	}
	host, err := b.lab.newHost()
	if err != nil {
		return nil, nil, nil, err
	}
	cleanup := func() error { return b.lab.dropNetns(host) }
	data, err := b.lab.dir(s.name)
	if err != nil {
		return nil, nil, nil, errors.Join(err, cleanup())
	}
	env := &runEnv{lab: b.lab, host: host, data: data, path: path, exec: ex}
	d, err := s.start(env)
	if err != nil {
		return nil, nil, nil, errors.Join(fmt.Errorf("starting %s: %w", s.name, err), cleanup())
	}
	return d, env, cleanup, nil
}

// runOnce attaches n fresh containers with the suite using workers concurrent callers,
// then detaches them all, and cleans up. Netns creation and removal are not timed. On
// error the partial result is discarded; everything is still removed.
func (b *bench) runOnce(ctx context.Context, s suite, n, workers int, ex timedExec) (res *runResult, err error) {
	d, env, cleanup, err := b.newRun(s, ex)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, cleanup()) }()
	if c, ok := d.(interface{ close() error }); ok {
		defer func() { err = errors.Join(err, c.close()) }()
	}
	ctrs, err := b.lab.newContainers(n)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, b.lab.dropAll(ctrs)) }()

	res = &runResult{Add: make([]sample, n), Del: make([]sample, n)}
	added := make([]bool, n)
	res.AddWall, err = inParallel(ctx, env.host, workers, n, func(i int) error {
		s, err := d.add(ctx, i, ctrs[i])
		res.Add[i], added[i] = s, err == nil
		if err != nil {
			return fmt.Errorf("ADD container %d: %w", i, err)
		}
		return nil
	})
	var delErr error
	res.DelWall, delErr = inParallel(ctx, env.host, workers, n, func(i int) error {
		if !added[i] {
			return nil
		}
		s, err := d.del(ctx, i, ctrs[i])
		res.Del[i] = s
		if err != nil {
			return fmt.Errorf("DEL container %d: %w", i, err)
		}
		return nil
	})
	if err = errors.Join(err, delErr); err != nil {
		return nil, err
	}
	return res, nil
}

// settle waits for the kernel to finish the asynchronous teardown of what a run of n
// containers removed, so it does not land in the next suite's timings.
func (b *bench) settle(ctx context.Context, n int) {
	select {
	case <-ctx.Done():
	case <-time.After(b.o.Settle + time.Duration(n)*b.o.SettlePerCtr):
	}
}

// inParallel calls op(i) for i in [0,n) from workers goroutines, each with its thread in
// host (so exec'd plugins inherit that netns), and returns the wall time. It stops handing
// out work at the first error or when ctx ends.
func inParallel(ctx context.Context, host ns.NetNS, workers, n int, op func(i int) error) (time.Duration, error) {
	jobs := make(chan int)
	var (
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
	)
	fail := func(err error) {
		mu.Lock()
		if first == nil {
			first = err
		}
		mu.Unlock()
	}
	failed := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return first != nil
	}
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := host.Do(func(ns.NetNS) error {
				for i := range jobs {
					if err := op(i); err != nil {
						fail(err)
					}
				}
				return nil
			})
			if err != nil {
				fail(err)
				for range jobs { // keep the feeder from blocking
				}
			}
		}()
	}
	for i := 0; i < n && !failed() && ctx.Err() == nil; i++ {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	wall := time.Since(start)
	if first == nil && ctx.Err() != nil {
		first = ctx.Err()
	}
	return wall, first
}
