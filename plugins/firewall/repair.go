package firewall

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/plugins/netnsid"
	"github.com/moornet/moor/plugins/nftwatch"
	"github.com/moornet/moor/plugins/statefs"
)

// Repairer puts moor's rules back after someone else removed or changed them (`nft flush
// ruleset`, `iptables -F`, a firewalld reload, `nft delete table inet moor`). It reads the
// State of the one namespace it was made in, compares the kernel with it (CheckNetwork,
// CheckAttachment, the labels of the "bridge moor" MAC spoof chain) and re-applies what
// differs (EnsureNetwork, AddAttachment, AddMacSpoof), which rewrite only the chains,
// rules and map elements whose labels differ: a repair never duplicates a rule and never
// touches a table or chain that is not moor's (the operator's moor-user chain is created
// when missing and never rewritten). Containers are not touched: their links and
// addresses are not the firewall's.
//
// When: on every nftables change in the namespace (the NFNLGRP_NFTABLES netlink multicast
// group, which iptables-nft's changes reach too), a little after the change so that a
// burst of events costs one check, and every Interval as a backstop (an event lost to a
// full socket buffer; iptables-legacy, which sends no event). The check reads without
// the lock; only when something is missing does it take the firewall lock, read the
// State again and apply under it, so that a network or attachment whose DEL runs
// meanwhile is never brought back.
//
// Privileges: NewRepairer opens everything it needs (the State directory, the lock file,
// the event socket) while the caller still has them; afterwards a repair needs
// CAP_NET_ADMIN in the namespace (and, for the iptables backend, to exec iptables), and
// read access to the State's files (see State). It does not write the State.
type Repairer struct {
	netNS    ns.NetNS
	interval time.Duration
	timeout  time.Duration
	logf     func(format string, args ...any)
	state    State
	cookie   uint64
	lock     *os.File
	events   *nftwatch.Watcher

	mu       sync.Mutex
	stats    RepairStats
	backends map[string]Backend
	// lastPrint is the iptables fingerprint taken when everything was last in place.
	lastPrint string
}

// RepairOptions configure NewRepairer.
type RepairOptions struct {
	// RunDir is the run directory whose State and lock are used (statefs.RunDir when
	// empty); the namespace's own State directory under it is found by NewRepairer.
	RunDir string
	// NetNS is the namespace repaired; nil: the calling thread's.
	NetNS ns.NetNS
	// Interval is the backstop check's period. Zero: DefaultRepairInterval, or
	// DefaultIPTablesRepairInterval when the State's backend is iptables.
	Interval time.Duration
	// LockFile is the firewall lock the plugins take (LockFileIn(RunDir) when empty).
	LockFile string
	// LockTimeout bounds the wait for the firewall lock. Zero: DefaultLockTimeout.
	LockTimeout time.Duration
	// Logf, when set, is told of every repair and failure.
	Logf func(format string, args ...any)

	noEvents bool // tests: the backstop alone, as with iptables-legacy
}

// Backstop periods. Every nftables change (iptables-nft's too) wakes the Repairer at
// once; the backstop is for events lost to a full socket buffer and, with the iptables
// backend, for iptables-legacy, which sends none: there it bounds the time to repair, and
// a backstop check that finds the tables as they were after the last check costs one
// listing per table (fingerprint).
const (
	DefaultRepairInterval         = 5 * time.Second
	DefaultIPTablesRepairInterval = 500 * time.Millisecond
)

// repairSettle lets the rest of a burst of events (a flush is one event per object) arrive.
const repairSettle = 20 * time.Millisecond

// RepairStats is what a Repairer did so far.
type RepairStats struct {
	Checks     uint64    `json:"checks"`
	Repairs    uint64    `json:"repairs"` // checks that found and re-applied something
	LastRepair time.Time `json:"lastRepair,omitzero"`
	LastWhat   string    `json:"lastWhat,omitempty"`  // what the last repair re-applied
	LastError  string    `json:"lastError,omitempty"` // of the last check; empty once one succeeds
	Events     bool      `json:"events"`              // nftables events are watched (else only the backstop)
	StateDir   string    `json:"stateDir"`
	Networks   int       `json:"networks"` // networks in the State at the last check
}

// NewRepairer opens the State directory (created when missing), the firewall lock file
// and the event socket of the namespace o.NetNS. Close releases them.
func NewRepairer(o RepairOptions) (*Repairer, error) {
	if o.RunDir == "" {
		o.RunDir = statefs.RunDir(nil)
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = DefaultLockTimeout
	}
	r := &Repairer{netNS: o.NetNS, interval: o.Interval, timeout: o.LockTimeout, logf: o.Logf, backends: map[string]Backend{}}
	err := Options{NetNS: o.NetNS}.inNetNS(func() error {
		dir, _, err := netnsid.SelfStateDir(o.RunDir)
		if err != nil {
			return err
		}
		r.state.Dir = filepath.Join(dir, stateDirName)
		r.cookie, err = namespaceCookie()
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := statefs.MkdirAll(r.state.Dir, stateDirMode); err != nil {
		return nil, &StateError{Op: "create", Err: err}
	}
	if r.state.root, err = os.OpenRoot(r.state.Dir); err != nil {
		return nil, &StateError{Op: "open", Err: err}
	}
	if o.LockFile == "" {
		o.LockFile = LockFileIn(o.RunDir)
	}
	if r.lock, err = statefs.OpenFile(o.LockFile, os.O_RDWR|os.O_CREATE, 0o600); err != nil {
		_ = r.state.root.Close()
		return nil, fmt.Errorf("firewall lock: %w", err)
	}
	nsFd := 0
	if o.NetNS != nil {
		nsFd = int(o.NetNS.Fd())
	}
	if o.noEvents {
		r.events = nil
	} else if r.events, err = nftwatch.Open(nsFd); err != nil {
		r.say("firewall repair: nftables events not watched, only the backstop checks: %v", err)
		r.events = nil
	}
	r.stats.Events = r.events != nil
	r.stats.StateDir = r.state.Dir
	if r.interval <= 0 {
		r.interval = DefaultRepairInterval
		if r.state.Backend() == KindIPTables {
			r.interval = DefaultIPTablesRepairInterval
		}
	}
	return r, nil
}

// StateDir is the directory of the State repaired from.
func (r *Repairer) StateDir() string { return r.state.Dir }

// Close releases what NewRepairer opened; Run must have returned.
func (r *Repairer) Close() {
	if r.events != nil {
		_ = r.events.Close()
	}
	_ = r.lock.Close()
	_ = r.state.root.Close()
}

// Stats returns a copy of the counters.
func (r *Repairer) Stats() RepairStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

func (r *Repairer) say(format string, args ...any) {
	if r.logf != nil {
		r.logf(format, args...)
	}
}

// load reads the State, or nothing when it was written by another life of the
// namespace's identity.
func (r *Repairer) load() ([]StoredNetwork, string, error) {
	if c := r.state.Cookie(); c != r.cookie {
		return nil, "", nil
	}
	nets, err := r.state.Load()
	return nets, r.state.Backend(), err
}

func (r *Repairer) backend(kind string) (Backend, error) {
	if b := r.backends[kind]; b != nil {
		return b, nil
	}
	b, err := New(kind, Options{NetNS: r.netNS, LockFile: r.lock.Name(), repairing: true})
	if err != nil {
		return nil, err
	}
	r.backends[kind] = b
	return b, nil
}

// missing lists the networks of nets whose rules the kernel lacks, and the attachments
// whose rules it lacks. A backend that checks many attachments on one read of the kernel (nftables: the port
// maps) does so: a check per attachment would read every attachment's rules once per
// attachment, which at a thousand containers with published ports is a million elements
// decoded on every change of the ruleset.
func missing(b Backend, nets []StoredNetwork) (netNames map[string]bool, atts map[AttachmentKey]bool) {
	netNames, atts = map[string]bool{}, map[AttachmentKey]bool{}
	batch, isBatch := b.(interface {
		missingAttachments([]StoredNetwork) (map[AttachmentKey]bool, error)
	})
	batched := false
	if isBatch {
		if m, err := batch.missingAttachments(nets); err == nil {
			atts, batched = m, true
		}
	}
	for _, sn := range nets {
		if b.CheckNetwork(sn.Network) != nil {
			netNames[sn.Network.Name] = true
		}
		if batched {
			continue
		}
		for _, a := range sn.Attachments {
			if b.CheckAttachment(sn.Network, a) != nil {
				atts[a.Key()] = true
			}
		}
	}
	return netNames, atts
}

// Once checks every stored network and attachment and re-applies what is missing or
// changed. It returns what it re-applied ("network NAME", "attachment KEY").
func (r *Repairer) Once() ([]string, error) { return r.check(false) }

// check is Once; backstop lets an iptables check end early when the tables are as they
// were after the last check.
func (r *Repairer) check(backstop bool) ([]string, error) {
	fixed, n, err := r.once(backstop)
	r.mu.Lock()
	r.stats.Checks++
	r.stats.Networks = n
	if len(fixed) > 0 {
		r.stats.Repairs++
		r.stats.LastRepair = time.Now()
		r.stats.LastWhat = fmt.Sprint(fixed)
	}
	newErr := err != nil && err.Error() != r.stats.LastError
	r.stats.LastError = "" // a check that succeeds clears the last failure
	if err != nil {
		r.stats.LastError = err.Error()
	}
	r.mu.Unlock()
	if len(fixed) > 0 {
		r.say("firewall repaired: %v", fixed)
	}
	if newErr { // the same failure every backstop period is logged once
		r.say("firewall repair: %v", err)
	}
	return fixed, err
}

// once repairs the networks and attachments, then the MAC spoof checks (outside the
// iptables fingerprint: the "bridge moor" table is nftables on either backend).
func (r *Repairer) once(backstop bool) ([]string, int, error) {
	fixed, n, err := r.onceRules(backstop)
	spoofs, serr := r.repairMacSpoofs()
	return append(fixed, spoofs...), n, errors.Join(err, serr)
}

func (r *Repairer) onceRules(backstop bool) ([]string, int, error) {
	nets, kind, err := r.load()
	if len(nets) == 0 {
		return nil, 0, err
	}
	b, err := r.backend(kind)
	if err != nil {
		return nil, len(nets), err
	}
	// The fingerprint is taken before the check: a change after it makes the next one
	// differ, so a check never vouches for tables it did not see.
	var print string
	if ipt, ok := b.(*iptBackend); ok {
		print, _ = ipt.fingerprint()
		if backstop && print != "" && print == r.lastPrint {
			return nil, len(nets), nil
		}
	}
	r.lastPrint = ""
	mn, ma := missing(b, nets)
	if len(mn) == 0 && len(ma) == 0 {
		r.lastPrint = print
		return nil, len(nets), nil
	}
	// Something is missing: apply it under the lock, from the State as it is now (what
	// was deleted meanwhile is left out; what was added is checked next time). An
	// attachment's AddAttachment ensures its network too, so such a network is not
	// ensured a second time.
	unlock, err := r.takeLock()
	if err != nil {
		return nil, len(nets), err
	}
	defer unlock()
	nets, _, loadErr := r.load()
	var fixed []string
	errs := []error{loadErr}
	for _, sn := range nets {
		n := sn.Network
		ensured := false
		for _, a := range sn.Attachments {
			if !ma[a.Key()] {
				continue
			}
			if err := b.AddAttachment(n, a); err != nil {
				errs = append(errs, fmt.Errorf("attachment %s: %w", a.Key(), err))
				continue
			}
			ensured = true
			fixed = append(fixed, "attachment "+a.Key().String())
		}
		if !mn[n.Name] {
			continue
		}
		if !ensured {
			if err := b.EnsureNetwork(n); err != nil {
				errs = append(errs, fmt.Errorf("network %s: %w", n.Name, err))
				continue
			}
		}
		fixed = append(fixed, "network "+n.Name)
	}
	return fixed, len(nets), errors.Join(errs...)
}

// takeLock takes the firewall lock on the file opened by NewRepairer, waiting at most the
// lock timeout.
func (r *Repairer) takeLock() (func(), error) {
	fd := int(r.lock.Fd())
	for end := time.Now().Add(r.timeout); ; time.Sleep(2 * time.Millisecond) {
		err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { _ = unix.Flock(fd, unix.LOCK_UN) }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			return nil, fmt.Errorf("firewall lock: %w", err)
		}
		if time.Now().After(end) {
			return nil, &LockTimeoutError{Path: r.lock.Name()}
		}
	}
}

// Run checks once, then on every nftables event and every interval, until ctx ends. It
// returns ctx's error.
func (r *Repairer) Run(ctx context.Context) error {
	wake := make(chan struct{}, 1)
	if r.events != nil {
		done := make(chan struct{})
		go r.watch(wake, done)
		defer func() { <-done }()
		defer r.events.Stop()
	}
	tick := time.NewTicker(r.interval)
	defer tick.Stop()
	_, _ = r.Once()
	for {
		backstop := false
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			backstop = true
		case <-wake:
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(repairSettle):
			}
			select {
			case <-wake:
			default:
			}
		}
		_, _ = r.check(backstop)
	}
}

// watch signals wake on every nftables event until the watcher stops or fails.
func (r *Repairer) watch(wake chan<- struct{}, done chan<- struct{}) {
	defer close(done)
	if err := r.events.Run(wake); err != nil {
		r.say("firewall repair: nftables events no longer watched, only the backstop checks: %v", err)
		r.mu.Lock()
		r.stats.Events = false
		r.mu.Unlock()
	}
}

// Backend is the firewall backend kind recorded in the State (KindDetect when none yet).
func (r *Repairer) Backend() string { return r.state.Backend() }
