package records

import (
	"context"
	"slices"
	"sync"
)

// broadcaster fans change notifications out to watchers without ever blocking a writer:
// each watcher accumulates the networks touched since its last delivery and a goroutine per
// watcher hands them over as one Change.
type broadcaster struct {
	mu       sync.Mutex
	closed   bool
	watchers map[*watcher]struct{}
}

type watcher struct {
	mu      sync.Mutex
	pending map[string]struct{}
	all     bool
	wake    chan struct{} // capacity 1: "something is pending"
	stop    chan struct{} // closed when the store closes
}

func (b *broadcaster) watch(ctx context.Context) (<-chan Change, error) {
	w := &watcher{pending: map[string]struct{}{}, wake: make(chan struct{}, 1), stop: make(chan struct{})}
	out := make(chan Change)
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		close(out)
		return out, nil
	}
	if b.watchers == nil {
		b.watchers = map[*watcher]struct{}{}
	}
	b.watchers[w] = struct{}{}
	b.mu.Unlock()

	go func() {
		defer close(out)
		for {
			select {
			case <-ctx.Done():
				b.remove(w)
				return
			case <-w.stop:
				return
			case <-w.wake:
			}
			c, ok := w.take()
			if !ok {
				continue
			}
			select {
			case out <- c:
			case <-ctx.Done():
				b.remove(w)
				return
			case <-w.stop:
				return
			}
		}
	}()
	return out, nil
}

// take returns the pending change and clears it.
func (w *watcher) take() (Change, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.all && len(w.pending) == 0 {
		return Change{}, false
	}
	c := Change{All: w.all}
	for n := range w.pending {
		c.Networks = append(c.Networks, n)
	}
	slices.Sort(c.Networks)
	clear(w.pending)
	w.all = false
	return c, true
}

func (b *broadcaster) remove(w *watcher) {
	b.mu.Lock()
	delete(b.watchers, w)
	b.mu.Unlock()
}

// notify records that network changed ("" means everything) for every watcher.
func (b *broadcaster) notify(network string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for w := range b.watchers {
		w.mu.Lock()
		if network == "" {
			w.all = true
		} else {
			w.pending[network] = struct{}{}
		}
		w.mu.Unlock()
		select {
		case w.wake <- struct{}{}:
		default: // already woken; the pending set carries the news
		}
	}
}

// close ends every watch.
func (b *broadcaster) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.closed = true
	for w := range b.watchers {
		close(w.stop)
	}
	b.watchers = nil
}
