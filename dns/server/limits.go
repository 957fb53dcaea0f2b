package server

import (
	"net/netip"
	"sync"
)

// inflight bounds concurrent work three ways at once: in all, per client address and per
// network. One client can then hold at most perClient slots, one network perNetwork, and no
// client or network can take every slot of the server. A full bound refuses at once: the
// caller answers SERVFAIL (UDP forwards) or closes (TCP connections) instead of queueing,
// so that nobody waits behind a flood.
type inflight struct {
	total, perClient, perNetwork int

	mu        sync.Mutex
	n         int
	byClient  map[netip.Addr]int
	byNetwork map[string]int
}

func newInflight(total, perClient, perNetwork int) *inflight {
	return &inflight{total: total, perClient: perClient, perNetwork: perNetwork,
		byClient: map[netip.Addr]int{}, byNetwork: map[string]int{}}
}

// acquire takes a slot for client on network ("" counts no network) and reports whether it
// got one; a true result must be paired with release.
func (l *inflight) acquire(client netip.Addr, network string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n >= l.total || l.byClient[client] >= l.perClient {
		return false
	}
	if network != "" && l.perNetwork > 0 && l.byNetwork[network] >= l.perNetwork {
		return false
	}
	l.n++
	l.byClient[client]++
	if network != "" {
		l.byNetwork[network]++
	}
	return true
}

// release gives back a slot taken by acquire. Empty entries are deleted so that the maps
// hold only clients and networks with work in flight.
func (l *inflight) release(client netip.Addr, network string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n--
	if l.byClient[client]--; l.byClient[client] <= 0 {
		delete(l.byClient, client)
	}
	if network != "" {
		if l.byNetwork[network]--; l.byNetwork[network] <= 0 {
			delete(l.byNetwork, network)
		}
	}
}

// releaser is release for one acquire as a function that may be called more than once
// (only the first call gives the slot back).
func (l *inflight) releaser(client netip.Addr, network string) func() {
	var once sync.Once
	return func() { once.Do(func() { l.release(client, network) }) }
}
