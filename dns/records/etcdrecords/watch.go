package etcdrecords

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/moornet/moor/dns/records"
)

// The wait before a lost watch is opened again doubles from rewatchMin to rewatchMax while
// etcd stays away.
const (
	rewatchMin = 200 * time.Millisecond
	rewatchMax = 5 * time.Second
)

func jsonUnmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

// watch is one Watch call: changes pile up in pending until the reader takes them, so the
// etcd stream is always drained and nothing blocks.
type watch struct {
	mu      sync.Mutex
	pending map[string]struct{}
	all     bool
	wake    chan struct{}
}

func (w *watch) note(network string, all bool) {
	w.mu.Lock()
	if all {
		w.all = true
	} else {
		w.pending[network] = struct{}{}
	}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *watch) take() (records.Change, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.all && len(w.pending) == 0 {
		return records.Change{}, false
	}
	c := records.Change{All: w.all}
	for n := range w.pending {
		c.Networks = append(c.Networks, n)
	}
	slices.Sort(c.Networks)
	clear(w.pending)
	w.all = false
	return c, true
}

// Watch implements records.Store: changes of any host's records and of this host's
// network definitions, from the revision current at the call.
func (s *Store) Watch(ctx context.Context) (<-chan records.Change, error) {
	rctx, cancel := s.ctx(ctx)
	resp, err := s.cli.Get(rctx, s.prefix, clientv3.WithCountOnly())
	cancel()
	if err != nil {
		return nil, fail("start watch", err)
	}
	out := make(chan records.Change)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		close(out)
		return out, nil
	}
	w := &watch{pending: map[string]struct{}{}, wake: make(chan struct{}, 1)}
	wctx, stop := context.WithCancel(ctx)
	s.cancels[w] = stop
	s.wg.Add(2)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		s.follow(wctx, w, resp.Header.Revision)
	}()
	go func() {
		defer s.wg.Done()
		defer close(out)
		defer func() {
			s.mu.Lock()
			delete(s.cancels, w)
			s.mu.Unlock()
			stop()
		}()
		for {
			select {
			case <-wctx.Done():
				return
			case <-w.wake:
			}
			c, ok := w.take()
			if !ok {
				continue
			}
			select {
			case out <- c:
			case <-wctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// follow reads etcd's watch into w. When the watch is lost (etcd restarted, no leader) it
// signals All and watches again from the last revision seen; when that revision was
// compacted meanwhile, from the newest one.
func (s *Store) follow(ctx context.Context, w *watch, rev int64) {
	pause := rewatchMin
	for ctx.Err() == nil {
		wch := s.cli.Watch(clientv3.WithRequireLeader(ctx), s.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
		compacted := false
		for resp := range wch {
			if resp.CompactRevision > 0 {
				compacted = true
			}
			if resp.Err() != nil || resp.Canceled {
				break
			}
			pause = rewatchMin
			rev = resp.Header.Revision
			for _, ev := range resp.Events {
				if n, ok := s.networkOf(string(ev.Kv.Key)); ok {
					w.note(n, false)
				}
			}
		}
		if ctx.Err() != nil {
			return
		}
		w.note("", true) // the reader must re-read everything
		select {
		case <-ctx.Done():
			return
		case <-time.After(pause):
		}
		pause = min(2*pause, rewatchMax)
		if compacted {
			gctx, cancel := s.ctx(ctx)
			if resp, err := s.cli.Get(gctx, s.prefix, clientv3.WithCountOnly()); err == nil {
				rev = resp.Header.Revision
			}
			cancel()
		}
	}
}

// networkOf maps a key to the network it belongs to; other hosts' definitions do not
// change this host's view.
func (s *Store) networkOf(key string) (string, bool) {
	rest := strings.TrimPrefix(key, s.prefix)
	if r, ok := strings.CutPrefix(rest, recordsDir); ok {
		n, _, ok := strings.Cut(r, "/")
		return n, ok
	}
	if r, ok := strings.CutPrefix(rest, networksDir+s.host+"/"); ok {
		return r, r != ""
	}
	return "", false
}
