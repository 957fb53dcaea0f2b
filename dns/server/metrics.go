package server

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// latencyBuckets are the upper bounds (seconds) of the request latency histogram.
var latencyBuckets = [...]float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}

// rcodeSlots covers the 4-bit header rcodes; extended rcodes are counted in the last slot.
const rcodeSlots = 16

// metrics are the server's counters, updated with atomics on the query path.
type metrics struct {
	queries            atomic.Uint64
	rcodes             [rcodeSlots]atomic.Uint64
	forwards           atomic.Uint64
	upstreamFailures   atomic.Uint64
	forwardOverload    atomic.Uint64
	wrongInterface     atomic.Uint64
	tcpRefused         atomic.Uint64
	cacheHits          atomic.Uint64
	cacheMisses        atomic.Uint64
	storeErrors        atomic.Uint64
	reloads            atomic.Uint64
	networkReads       atomic.Uint64 // re-reads of some networks (update)
	incremental        atomic.Uint64 // records added without re-reading their network
	incrementalDeletes atomic.Uint64 // records removed without re-reading their network
	latency            [len(latencyBuckets)]atomic.Uint64
	latencyInf         atomic.Uint64
	latencySumNanos    atomic.Uint64
}

func (m *metrics) observe(rcode int, d time.Duration) {
	m.queries.Add(1)
	m.rcodes[min(max(rcode, 0), rcodeSlots-1)].Add(1)
	m.latencySumNanos.Add(uint64(d))
	s := d.Seconds()
	for i, b := range latencyBuckets {
		if s <= b {
			m.latency[i].Add(1)
			return
		}
	}
	m.latencyInf.Add(1)
}

// metricsStage counts every query, its rcode and its latency.
type metricsStage struct {
	next Handler
	m    *metrics
}

func (s *metricsStage) Name() string { return "metrics" }

func (s *metricsStage) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	start := time.Now()
	req := requestFrom(ctx)
	if req != nil {
		req.start = start
	}
	rc, err := NextOrFailure(s.Name(), s.next, ctx, w, r)
	if req != nil && req.async {
		return rc, err // the goroutine that answers counts it
	}
	sent := rc
	if req != nil && req.written {
		sent = req.rcode
	} else if ClientWrite(rc) {
		sent = dns.RcodeServerFailure // nothing written: the server answers SERVFAIL
	}
	s.m.observe(sent, time.Since(start))
	return rc, err
}

// writeProm writes the metrics in the Prometheus text exposition format (version 0.0.4).
func (m *metrics) writeProm(w io.Writer, snap *snapshot, listenErrs int) error {
	ew := &errWriter{w: w}
	counter := func(name, help string, v uint64) {
		ew.printf("# HELP %s %s\n# TYPE %s counter\n%s %d\n", name, help, name, name, v)
	}
	gauge := func(name, help string, v int) {
		ew.printf("# HELP %s %s\n# TYPE %s gauge\n%s %d\n", name, help, name, name, v)
	}
	counter("moor_dns_queries_total", "DNS queries received.", m.queries.Load())
	ew.printf("# HELP moor_dns_responses_total DNS responses sent, by rcode.\n# TYPE moor_dns_responses_total counter\n")
	for i := range m.rcodes {
		if v := m.rcodes[i].Load(); v > 0 {
			name := dns.RcodeToString[i]
			if name == "" {
				name = strconv.Itoa(i)
			}
			ew.printf("moor_dns_responses_total{rcode=%q} %d\n", name, v)
		}
	}
	counter("moor_dns_forwards_total", "Queries forwarded to upstream resolvers.", m.forwards.Load())
	counter("moor_dns_upstream_failures_total", "Upstream attempts that failed or timed out.", m.upstreamFailures.Load())
	counter("moor_dns_forward_overload_total", "Queries refused because too many forwards were in flight.", m.forwardOverload.Load())
	counter("moor_dns_wrong_interface_total", "UDP queries dropped because they arrived on an interface that does not hold the gateway address.", m.wrongInterface.Load())
	counter("moor_dns_tcp_refused_total", "TCP connections closed at once because too many were open.", m.tcpRefused.Load())
	counter("moor_dns_cache_hits_total", "Forwarded queries answered from the cache.", m.cacheHits.Load())
	counter("moor_dns_cache_misses_total", "Forwarded queries not in the cache.", m.cacheMisses.Load())
	counter("moor_dns_store_errors_total", "Record store reads that reported an error.", m.storeErrors.Load())
	counter("moor_dns_reloads_total", "Full re-reads of the record store.", m.reloads.Load())
	counter("moor_dns_network_reads_total", "Re-reads of some networks of the record store (watch changes, reloads of one network).", m.networkReads.Load())
	counter("moor_dns_incremental_updates_total", "Records added to the index without re-reading their network.", m.incremental.Load())
	counter("moor_dns_incremental_deletes_total", "Records removed from the index without re-reading their network.", m.incrementalDeletes.Load())
	ew.printf("# HELP moor_dns_request_duration_seconds Time to answer a query.\n# TYPE moor_dns_request_duration_seconds histogram\n")
	var cum uint64
	for i, b := range latencyBuckets {
		cum += m.latency[i].Load()
		ew.printf("moor_dns_request_duration_seconds_bucket{le=%q} %d\n", strconv.FormatFloat(b, 'g', -1, 64), cum)
	}
	cum += m.latencyInf.Load()
	ew.printf("moor_dns_request_duration_seconds_bucket{le=\"+Inf\"} %d\n", cum)
	ew.printf("moor_dns_request_duration_seconds_sum %g\n", time.Duration(m.latencySumNanos.Load()).Seconds())
	ew.printf("moor_dns_request_duration_seconds_count %d\n", cum)
	gauge("moor_dns_records", "Records (container interfaces) served.", snap.records)
	gauge("moor_dns_networks", "Networks served.", len(snap.nets))
	gauge("moor_dns_listen_addresses", "Gateway addresses listened on.", len(snap.gateways))
	gauge("moor_dns_listen_errors", "Gateway addresses that could not be bound.", listenErrs)
	return ew.err
}

// errWriter keeps the first write error so the exposition code stays linear.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) printf(format string, args ...any) {
	if e.err == nil {
		_, e.err = fmt.Fprintf(e.w, format, args...)
	}
}
