package server

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moornet/moor/control"
	"github.com/moornet/moor/dns/records"
	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/netnsid"
)

// Server is a running DNS sidecar. Create it with New, then Start; Run does both and waits.
type Server struct {
	opts      Options
	log       *slog.Logger
	store     records.Store
	ownStore  bool
	metrics   *metrics
	chain     Handler
	snap      atomic.Pointer[snapshot]
	upstreams atomic.Pointer[[]string]
	ln        listeners
	control   *control.Server
	netns     netnsid.ID  // the namespace served, reported by /healthz
	orphaned  atomic.Bool // nothing but this process keeps netns alive (watchNetns)

	baseCtx context.Context // cancelled by Close: aborts forwards in flight
	cancel  context.CancelFunc

	forwards *inflight      // forwarded queries in flight
	async    sync.WaitGroup // goroutines answering forwarded UDP queries
	tcpConns *inflight      // open TCP connections

	// updateMu serialises snapshot updates (watch changes and reloads).
	updateMu  sync.Mutex
	gateways  map[string][]netip.Addr // each network's gateways, for the snapshot index
	peakNames int                     // the most names indexed since memory was last released

	idleMu    sync.Mutex
	idleTimer *time.Timer
	idle      chan struct{} // closed when the idle timeout fired
	idleOnce  sync.Once

	ready     chan struct{} // closed when Start is done: the control API answers from then on
	closeOnce sync.Once
	following atomic.Bool
	done      chan struct{} // closed when the update loop ended

	repair        *firewallRepair // nil unless Options.FirewallRepair
	repairRunning bool
}

// StartError reports a failure to start the server; it surfaces as DNSServerFailure (107).
type StartError struct {
	Step string
	Err  error
}

func (e *StartError) Error() string { return "dns server " + e.Step + ": " + e.Err.Error() }

// Unwrap exposes the cause.
func (e *StartError) Unwrap() error { return e.Err }

// CNICode maps the error to "DNS server failure".
func (e *StartError) CNICode() uint { return codes.DNSServerFailure }

// New checks opts and prepares a server; it binds nothing yet.
func New(opts Options) (*Server, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Server{
		opts:     opts,
		log:      opts.Logger,
		metrics:  &metrics{},
		idle:     make(chan struct{}),
		ready:    make(chan struct{}),
		done:     make(chan struct{}),
		gateways: map[string][]netip.Addr{},
	}
	s.baseCtx, s.cancel = context.WithCancel(context.Background())
	s.forwards = newInflight(opts.MaxForwards, opts.MaxForwardsPerClient, opts.MaxForwardsPerNetwork)
	s.tcpConns = newInflight(opts.MaxTCPConns, opts.MaxTCPConnsPerClient, 0)
	s.snap.Store(emptySnapshot())
	s.chain = buildChain(s, opts.Chain)
	return s, nil
}

// Chain returns the names of the handler stages in the order a query passes them.
func (s *Server) Chain() []string { return slices.Clone(s.opts.Chain) }

// Start opens the store, makes the control socket, drops privileges (unless
// Options.KeepPrivileges), reads the store, binds every network's gateway addresses, lets the
// control API answer, and follows store changes until ctx is done or Close is called. Call
// it once. On error everything started is stopped again.
func (s *Server) Start(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			s.shutdown()
		}
	}()
	if s.netns, err = netnsid.Self(); err != nil {
		return &StartError{Step: "network namespace", Err: err}
	}
	if s.opts.Store != nil {
		s.store = s.opts.Store
	} else {
		root := s.opts.StoreDir
		if !s.opts.KeepPrivileges {
			// The server will read as an unprivileged group member: open the store to
			// that group, and read it relative to the working directory, so that the
			// directories above it (0700 under /run/moor) need not be opened to anyone.
			if err := records.GrantRead(root, s.opts.GID); err != nil {
				return &StartError{Step: "open store to the server's group", Err: err}
			}
			if err := os.Chdir(root); err != nil {
				return &StartError{Step: "enter store", Err: err}
			}
			root = "."
		}
		st, err := records.NewLocal(root)
		if err != nil {
			return &StartError{Step: "open store", Err: err}
		}
		s.store, s.ownStore = st, true
	}
	// Watch before the first read so that no change falls between the two.
	changes, err := s.store.Watch(s.baseCtx)
	if err != nil {
		return &StartError{Step: "watch store", Err: err}
	}
	// The control socket is made as root (its directory is root's); it answers only once
	// Start is done (gated), so a healthy server has dropped its privileges and serves the
	// store.
	if s.control, err = startControl(s); err != nil {
		return &StartError{Step: "control server", Err: err}
	}
	// Drop before the first read and bind: no query is ever answered as root, and the
	// gateways are bound with the one capability kept, as those of later networks are.
	retain := s.openRepair()
	if !s.opts.KeepPrivileges {
		seccomp, err := DropPrivileges(s.opts.UID, s.opts.GID, retain)
		if err != nil {
			return &StartError{Step: "drop privileges", Err: err}
		}
		if !seccomp {
			s.log.Warn("no seccomp filter for this architecture")
		}
		s.log.Info("dropped privileges", "uid", s.opts.UID, "gid", s.opts.GID, "seccomp", seccomp,
			"kept", retain.Caps, "exec", retain.Exec)
	}
	s.runRepair()
	s.repairRunning = s.repair != nil
	if err := s.Reload(ctx); err != nil {
		return &StartError{Step: "read store", Err: err}
	}
	close(s.ready)
	s.following.Store(true)
	go s.follow(ctx, changes)
	return nil
}

// gate holds control requests until Start is done (or the request gives up, as it does
// when a failed Start stops the control server).
func (s *Server) gate(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-s.ready:
			h.ServeHTTP(w, r)
		case <-r.Context().Done():
		}
	})
}

// follow applies store changes until the watch ends or ctx is done, and checks the
// namespace every Options.NetnsCheck until it finds it deleted (checkNetns).
func (s *Server) follow(ctx context.Context, changes <-chan records.Change) {
	defer close(s.done)
	var netnsTick <-chan time.Time
	if s.opts.NetnsCheck > 0 {
		t := time.NewTicker(s.opts.NetnsCheck)
		defer t.Stop()
		netnsTick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.baseCtx.Done():
			return
		case <-netnsTick:
			if s.checkNetns() {
				netnsTick = nil
			}
		case c, ok := <-changes:
			if !ok {
				return
			}
			var err error
			if c.All {
				err = s.Reload(ctx)
			} else {
				err = s.update(ctx, c.Networks)
			}
			if err != nil {
				s.log.Error("apply record store change", "err", err)
			}
		}
	}
}

// Reload re-reads the whole store (and the host's resolvers) and swaps in a new index.
// Sockets stay open; only gateway addresses that appeared or vanished gain or lose one.
func (s *Server) Reload(ctx context.Context) error {
	s.updateMu.Lock()
	defer s.updateMu.Unlock()
	s.metrics.reloads.Add(1)
	s.refreshUpstreams()
	nets, nerr := s.store.Networks(ctx)
	if nerr != nil {
		s.metrics.storeErrors.Add(1)
		s.log.Error("read networks", "err", nerr)
		if len(nets) == 0 && !isPartial(nerr) {
			return nerr
		}
	}
	recs, rerr := s.store.List(ctx, "")
	if rerr != nil {
		s.metrics.storeErrors.Add(1)
		s.log.Error("read records", "err", rerr)
		if len(recs) == 0 && !isPartial(rerr) {
			return rerr
		}
	}
	// Group the records by network in place (buildView sorts each group): the records of
	// a large store are the biggest thing a reload holds, so they are never copied.
	slices.SortStableFunc(recs, func(a, b records.Record) int { return strings.Compare(a.Network, b.Network) })
	snap := emptySnapshot()
	s.gateways = map[string][]netip.Addr{}
	for _, n := range nets {
		i, found := slices.BinarySearchFunc(recs, n.Name, func(r records.Record, name string) int { return strings.Compare(r.Network, name) })
		j := i
		for found && j < len(recs) && recs[j].Network == n.Name {
			j++
		}
		v, gws := buildView(n, recs[i:j:j], s.opts.Domain)
		snap.nets[n.Name] = v
		s.gateways[n.Name] = gws
	}
	snap.index(s.gateways)
	s.publish(snap)
	return nil
}

// isPartial reports whether err only describes some bad entries (the rest was read).
func isPartial(err error) bool {
	var ce *records.CorruptError
	return errors.As(err, &ce)
}

// update re-reads the named networks only and shares every other network's index.
func (s *Server) update(ctx context.Context, names []string) error {
	s.updateMu.Lock()
	defer s.updateMu.Unlock()
	return s.updateLocked(ctx, names)
}

// updateLocked is update for callers that hold updateMu.
func (s *Server) updateLocked(ctx context.Context, names []string) error {
	s.metrics.networkReads.Add(1)
	nets, err := s.store.Networks(ctx)
	if err != nil {
		s.metrics.storeErrors.Add(1)
		if len(nets) == 0 && !isPartial(err) {
			return err
		}
	}
	views := map[string]*netView{}
	var errs []error
	for _, name := range names {
		i := slices.IndexFunc(nets, func(n records.Network) bool { return n.Name == name })
		if i < 0 {
			views[name] = nil // deleted
			delete(s.gateways, name)
			continue
		}
		recs, err := s.store.List(ctx, name)
		if err != nil {
			s.metrics.storeErrors.Add(1)
			errs = append(errs, err)
		}
		v, gws := buildView(nets[i], recs, s.opts.Domain)
		views[name] = v
		s.gateways[name] = gws
	}
	s.publish(s.snap.Load().with(views, s.gateways))
	return errors.Join(errs...)
}

// publish swaps the snapshot in, adjusts listeners and the idle timer, and hands memory
// back to the system after a large shrink. Callers hold updateMu.
func (s *Server) publish(snap *snapshot) {
	s.snap.Store(snap)
	for _, v := range snap.nets {
		if v.skipped > 0 {
			s.log.Warn("network holds too many names; records left out", "network", v.name, "skipped", v.skipped, "limit", records.MaxNamesPerNetwork)
		}
	}
	s.syncListeners(snap.gateways)
	s.armIdle(snap.records)
	s.releaseMemory(snap.names)
}

// releaseMemoryAbove is the peak number of names below which a shrink is not worth a
// forced collection: a few thousand names index in a few megabytes.
const releaseMemoryAbove = 8192

// releaseMemory returns the memory of a large index to the system once the index has
// shrunk to half its peak or less (after the DEL of an attachment with many names, or of
// many attachments). The Go runtime would give it back by itself only slowly: a heap that
// no longer allocates is collected every two minutes and scavenged gradually, so the peak
// stays in RSS for minutes. The collection runs in the background; queries read the new
// snapshot meanwhile.
func (s *Server) releaseMemory(names int) {
	if names > s.peakNames {
		s.peakNames = names
		return
	}
	if s.peakNames < releaseMemoryAbove || names > s.peakNames/2 {
		return
	}
	s.peakNames = names
	go debug.FreeOSMemory()
}

func (s *Server) refreshUpstreams() {
	ups := s.opts.Upstreams
	if len(ups) == 0 {
		var err error
		ups, err = hostUpstreams(s.opts.ResolvConf, s.opts.SystemdResolvConf)
		if err != nil {
			s.log.Warn("no upstream resolvers", "err", err)
		}
	}
	s.upstreams.Store(&ups)
}

// armIdle starts the idle countdown when no record is left and stops it otherwise.
func (s *Server) armIdle(nrecords int) {
	orphaned := s.orphaned.Load()
	idle := s.opts.IdleTimeout
	if idle < 0 {
		if !orphaned {
			return
		}
		idle = DefaultIdleTimeout // serving forever is for a namespace that still exists
	}
	s.idleMu.Lock()
	defer s.idleMu.Unlock()
	if nrecords > 0 && !orphaned {
		if s.idleTimer != nil {
			s.idleTimer.Stop()
			s.idleTimer = nil
		}
		return
	}
	if s.idleTimer == nil {
		s.idleTimer = time.AfterFunc(idle, func() {
			if s.snap.Load().records == 0 || s.orphaned.Load() {
				s.idleOnce.Do(func() { close(s.idle) })
			}
		})
	}
}

// Idle is closed once no network has had a record for Options.IdleTimeout.
func (s *Server) Idle() <-chan struct{} { return s.idle }

// Close stops listening, the control server and the store watch. It is safe to call twice.
func (s *Server) Close() error {
	s.closeOnce.Do(s.shutdown)
	return nil
}

func (s *Server) shutdown() {
	s.cancel()
	if s.following.Load() {
		<-s.done // no update may run after Close returns
	}
	s.idleMu.Lock()
	if s.idleTimer != nil {
		s.idleTimer.Stop()
	}
	s.idleMu.Unlock()
	if s.control != nil {
		s.control.Stop(controlStopMax)
	}
	s.stopListeners()
	s.stopRepair(s.repairRunning)
	s.async.Wait() // no reader is left to start one; baseCtx aborted their upstreams
	if s.ownStore && s.store != nil {
		_ = s.store.Close()
	}
}

// Run starts a server and serves until ctx is done or the server has been idle (no records)
// for Options.IdleTimeout. It holds Options.PidFile locked meanwhile, so that only one
// instance runs; a second one gets *AlreadyRunningError. It returns nil after a clean stop.
func Run(ctx context.Context, opts Options) error {
	tuneGC()
	s, err := New(opts)
	if err != nil {
		return err
	}
	pid, err := lockPidFile(s.opts.PidFile)
	if err != nil {
		return err
	}
	defer pid.release()
	if err := s.Start(ctx); err != nil {
		return err
	}
	defer s.Close()
	select {
	case <-ctx.Done():
		s.log.Info("stopping: context done")
	case <-s.Idle():
		if s.orphaned.Load() {
			s.log.Info("stopping: the network namespace was deleted", "netns", s.netns, "idle", s.opts.IdleTimeout)
		} else {
			s.log.Info("stopping: no records left", "idle", s.opts.IdleTimeout)
		}
	}
	return nil
}
