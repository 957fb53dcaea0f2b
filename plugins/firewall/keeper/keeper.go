// Package keeper is the host's firewall keeper: one process per host network namespace
// (`moor-dns keep-firewall`) that runs firewall.Repairer over the firewall State, so that
// moor's rules come back by themselves after a firewall reload, and writes what it did
// to a small stats file that `moor doctor` reads.
//
// Where it runs, and why. The DNS sidecar (`moor-dns serve`) already runs beside every
// bridge network with DNS, but it drops every capability but CAP_NET_BIND_SERVICE once it
// has bound its sockets: a process that answers untrusted packets must not be able to
// rewrite the host's firewall, so the repair loop cannot live inside it, and networks
// without DNS have no sidecar at all. The keeper is therefore a mode of the same binary
// (no new binary to install), started by the bridge driver's ADD whenever it records
// firewall state (Start: a no-op while one runs), for networks with and without DNS alike.
// It keeps its root privileges (CAP_NET_ADMIN is what it needs) and does nothing but
// read the State and call the firewall backend. It stops when the State holds no network
// for IdleTimeout, as the sidecar does with no record.
//
// It does not write the State (the plugins do) and does not restart containers or touch
// their links and addresses.
package keeper

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/moornet/moor/plugins/firewall"
	"github.com/moornet/moor/plugins/flock"
	"github.com/moornet/moor/plugins/statefs"
)

// Command is the argument of moor-dns that runs the keeper.
const Command = "keep-firewall"

// DefaultIdleTimeout is how long the keeper waits with no network recorded before it stops.
const DefaultIdleTimeout = 30 * time.Second

// Files of the keeper, in the State directory.
const (
	lockFile  = "keeper.lock"
	statsFile = "repairs.json"
)

// Options configure Run.
type Options struct {
	State       firewall.State
	IdleTimeout time.Duration // zero: DefaultIdleTimeout
	Log         *slog.Logger
	// FirewallLock is the firewall's host lock (firewall.Options.LockFile); empty: its default.
	FirewallLock string
	// NetNS is the namespace kept; nil: the process's (the moor-dns command).
	NetNS ns.NetNS
}

// ErrRunning is returned by Run when another keeper holds the lock.
var ErrRunning = errors.New("a firewall keeper already runs for this state")

// Run keeps the firewall until ctx ends or no network has been recorded for the idle
// timeout. It holds an exclusive lock on the State directory's keeper.lock: a second
// keeper returns ErrRunning at once.
func Run(ctx context.Context, o Options) error {
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if err := statefs.MkdirAll(o.State.Dir, 0o700); err != nil {
		return err
	}
	release, err := flock.Lock(ctx, filepath.Join(o.State.Dir, lockFile), flock.Options{Timeout: time.Millisecond})
	if errors.Is(err, flock.ErrTimeout) {
		return ErrRunning
	}
	if err != nil {
		return err
	}
	defer release()
	fw, err := firewall.New(o.State.Backend(), firewall.Options{LockFile: o.FirewallLock, NetNS: o.NetNS, Republish: true})
	if err != nil {
		return err
	}
	r := &firewall.Repairer{Backend: fw, State: o.State, NetNS: o.NetNS, Logf: func(f string, a ...any) { o.Log.Info(fmt.Sprintf(f, a...)) }}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	o.Log.Info("firewall keeper started", "backend", fw.Name(), "state", o.State.Dir)

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var written firewall.RepairStats
	idleSince := time.Now()
	for {
		select {
		case err := <-done:
			return err
		case <-tick.C:
		}
		if st := r.Stats(); st.Repairs != written.Repairs || st.LastError != written.LastError || st.Events != written.Events {
			if err := writeStats(o.State.Dir, st); err != nil {
				o.Log.Warn("writing repair stats", "err", err)
			} else {
				written = st
			}
		}
		nets, err := o.State.Load()
		if err != nil || len(nets) > 0 {
			idleSince = time.Now()
			continue
		}
		if time.Since(idleSince) >= o.IdleTimeout {
			o.Log.Info("firewall keeper stops: no network recorded")
			cancel()
			<-done
			return nil
		}
	}
}

// Stats is what the keeper wrote last.
type Stats struct {
	firewall.RepairStats
	PID     int       `json:"pid"`
	Written time.Time `json:"written"`
}

func writeStats(dir string, st firewall.RepairStats) error {
	b, err := json.Marshal(Stats{RepairStats: st, PID: os.Getpid(), Written: time.Now()})
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, statsFile+".tmp")
	f, err := statefs.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, statsFile))
}

// ReadStats returns the stats the keeper of the State directory wrote; ok is false when
// none were written.
func ReadStats(dir string) (st Stats, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(dir, statsFile))
	if errors.Is(err, os.ErrNotExist) {
		return st, false, nil
	}
	if err != nil {
		return st, false, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, false, fmt.Errorf("%s: %w", statsFile, err)
	}
	return st, true, nil
}

// Running tells whether a keeper holds the State directory's lock.
func Running(dir string) bool {
	release, err := flock.Lock(context.Background(), filepath.Join(dir, lockFile), flock.Options{Timeout: time.Millisecond, NoCreate: true})
	if err != nil {
		return errors.Is(err, flock.ErrTimeout)
	}
	release()
	return false
}

// Start runs `exe keep-firewall` in its own session, detached, unless a keeper already
// runs for the State directory, which it is given with --state-dir.
func Start(exe string, dir string) error {
	if Running(dir) {
		return nil
	}
	cmd := exec.Command(exe, Command, "--state-dir", dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting the firewall keeper %s: %w", exe, err)
	}
	return cmd.Process.Release()
}
