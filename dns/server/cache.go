package server

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// cacheStage keeps forwarded answers for their TTL (capped by Options.CacheMaxTTL), positive
// ones by their smallest answer TTL and negative ones (NXDOMAIN, NODATA) by their SOA's
// minimum. It holds at most Options.CacheSize entries and evicts an arbitrary one when full.
// Truncated answers and failures are not cached. Local answers never reach it.
type cacheStage struct {
	next   Handler
	s      *Server
	max    int
	maxTTL time.Duration

	mu    sync.Mutex
	items map[cacheKey]cacheItem
}

type cacheKey struct {
	name   string // lowercase
	qtype  uint16
	do, cd bool
	tcp    bool   // a UDP answer may be truncated differently
	group  string // the upstream set ("" for the host's)
}

type cacheItem struct {
	msg     *dns.Msg
	stored  time.Time
	expires time.Time
}

func newCacheStage(s *Server, next Handler) Handler {
	if s.opts.CacheSize < 0 {
		return &passStage{name: "cache", next: next}
	}
	return &cacheStage{next: next, s: s, max: s.opts.CacheSize, maxTTL: s.opts.CacheMaxTTL, items: map[cacheKey]cacheItem{}}
}

func (c *cacheStage) Name() string { return "cache" }

func (c *cacheStage) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	req := requestFrom(ctx)
	_, group, ok := c.s.upstreamsFor(req)
	if !ok {
		return NextOrFailure(c.Name(), c.next, ctx, w, r)
	}
	q := r.Question[0]
	key := cacheKey{name: strings.ToLower(q.Name), qtype: q.Qtype, cd: r.CheckingDisabled, tcp: req.tcp, group: group}
	if opt := r.IsEdns0(); opt != nil {
		key.do = opt.Do()
	}
	now := time.Now()
	if m := c.get(key, now); m != nil {
		c.s.metrics.cacheHits.Add(1)
		m.Id = r.Id
		m.Question = r.Question
		return writeReply(w, req, r, m)
	}
	c.s.metrics.cacheMisses.Add(1)
	// Store before the client has the answer, so that its next query already hits.
	cw := &captureWriter{ResponseWriter: w, store: func(m *dns.Msg) {
		if ttl := cacheTTL(m, c.maxTTL); ttl > 0 {
			c.put(key, cacheItem{msg: m, stored: now, expires: now.Add(ttl)})
		}
	}}
	return NextOrFailure(c.Name(), c.next, ctx, cw, r)
}

// get returns a private copy of a live entry with its TTLs aged, or nil.
func (c *cacheStage) get(key cacheKey, now time.Time) *dns.Msg {
	c.mu.Lock()
	it, ok := c.items[key]
	if ok && !now.Before(it.expires) {
		delete(c.items, key)
		ok = false
	}
	c.mu.Unlock()
	if !ok {
		return nil
	}
	m := it.msg.Copy()
	age := uint32(now.Sub(it.stored) / time.Second)
	for _, section := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range section {
			if h := rr.Header(); h.Rrtype != dns.TypeOPT {
				h.Ttl -= min(h.Ttl, age)
			}
		}
	}
	return m
}

func (c *cacheStage) put(key cacheKey, it cacheItem) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.items[key]; !ok && len(c.items) >= c.max {
		for k := range c.items { // map order is random: an arbitrary victim
			delete(c.items, k)
			break
		}
	}
	c.items[key] = it
}

// cacheTTL returns how long m may be cached, or 0 when it may not.
func cacheTTL(m *dns.Msg, maxTTL time.Duration) time.Duration {
	if m.Truncated {
		return 0
	}
	var ttl uint32
	switch {
	case m.Rcode == dns.RcodeSuccess && len(m.Answer) > 0:
		ttl = m.Answer[0].Header().Ttl
		for _, rr := range m.Answer[1:] {
			ttl = min(ttl, rr.Header().Ttl)
		}
	case m.Rcode == dns.RcodeSuccess || m.Rcode == dns.RcodeNameError:
		for _, rr := range m.Ns {
			if soa, ok := rr.(*dns.SOA); ok {
				ttl = min(soa.Hdr.Ttl, soa.Minttl)
			}
		}
	}
	return min(time.Duration(ttl)*time.Second, maxTTL)
}

// captureWriter hands a copy of the reply written through it to store, then writes it.
type captureWriter struct {
	dns.ResponseWriter
	store func(*dns.Msg)
}

func (c *captureWriter) WriteMsg(m *dns.Msg) error {
	cp := m.Copy()
	// The OPT record belongs to this exchange; writeReply adds one for each later client.
	extra := cp.Extra[:0]
	for _, rr := range cp.Extra {
		if rr.Header().Rrtype != dns.TypeOPT {
			extra = append(extra, rr)
		}
	}
	cp.Extra = extra
	c.store(cp)
	return c.ResponseWriter.WriteMsg(m)
}

// detach keeps the capture around a detached copy of the inner writer (see detacher).
func (c *captureWriter) detach() dns.ResponseWriter {
	d, ok := c.ResponseWriter.(detacher)
	if !ok {
		return nil
	}
	inner := d.detach()
	if inner == nil {
		return nil
	}
	return &captureWriter{ResponseWriter: inner, store: c.store}
}

// passStage stands in for a disabled stage so the chain keeps its shape.
type passStage struct {
	name string
	next Handler
}

func (p *passStage) Name() string { return p.name }

func (p *passStage) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	return NextOrFailure(p.name, p.next, ctx, w, r)
}
