package server

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"time"

	"github.com/miekg/dns"
)

// forwardStage sends names the networks do not hold to upstream resolvers, one after the
// other with a short timeout each. Over UDP the forward runs in its own goroutine, so that
// the socket's readers go on answering local names at once; the slots of Server.forwards
// bound that work in all, per client and per network, and a query past a bound gets SERVFAIL
// at once. Over TCP the forward runs on the connection's goroutine (one client's connection
// waits, nobody else), within the same bounds.
type forwardStage struct {
	next Handler
	s    *Server
}

func newForwardStage(s *Server, next Handler) Handler {
	return &forwardStage{next: next, s: s}
}

func (f *forwardStage) Name() string { return "forward" }

// errNoUpstream reports that no upstream resolver is known.
var errNoUpstream = errors.New("no upstream resolver configured")

// detacher is a ResponseWriter that can hand out a copy of itself that stays valid after
// ServeDNS returned (the UDP writer is reused for the next packet).
type detacher interface {
	detach() dns.ResponseWriter
}

func (f *forwardStage) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	req := requestFrom(ctx)
	ups, _, ok := f.s.upstreamsFor(req)
	if !ok {
		return dns.RcodeRefused, nil // internal networks only: never forwarded
	}
	if len(ups) == 0 {
		return dns.RcodeServerFailure, &StageError{Stage: f.Name(), Err: errNoUpstream}
	}
	network := req.views[0].name
	if !f.s.forwards.acquire(req.src, network) {
		f.s.metrics.forwardOverload.Add(1)
		return dns.RcodeServerFailure, nil
	}
	f.s.metrics.forwards.Add(1)
	// The slot is given back before the answer is written: a client that has its answer
	// may ask again at once (A, then AAAA) and must find its slot free.
	free := f.s.forwards.releaser(req.src, network)
	if d, ok := w.(detacher); ok && !req.tcp {
		if dw := d.detach(); dw != nil {
			areq := *req
			areq.written = false
			req.async = true // the goroutine below answers and counts the query
			actx := context.WithValue(f.s.baseCtx, requestKey{}, &areq)
			f.s.async.Go(func() {
				defer free()
				rc, err := f.forward(actx, dw, r, &areq, ups, free)
				free()
				f.s.finish(dw, &areq, r, rc, err)
				if !areq.start.IsZero() {
					f.s.metrics.observe(areq.rcode, time.Since(areq.start))
				}
			})
			return dns.RcodeSuccess, nil
		}
	}
	defer free() // before the chain writes an error answer
	return f.forward(ctx, w, r, req, ups, free)
}

// forward asks at most maxUpstream upstreams in turn and writes the first good answer,
// calling free (the forward slot's release) just before.
func (f *forwardStage) forward(ctx context.Context, w dns.ResponseWriter, r *dns.Msg, req *request, ups []string, free func()) (int, error) {
	network := "udp"
	if req.tcp {
		network = "tcp"
	}
	var last *dns.Msg
	var errs []error
	for _, u := range ups[:min(len(ups), maxUpstream)] {
		c := &dns.Client{Net: network, Timeout: f.s.opts.ForwardTimeout}
		resp, err := exchange(ctx, c, r, u)
		if err != nil {
			f.s.metrics.upstreamFailures.Add(1)
			errs = append(errs, fmt.Errorf("upstream %s: %w", u, err))
			continue
		}
		if resp.Rcode == dns.RcodeServerFailure || resp.Rcode == dns.RcodeRefused {
			f.s.metrics.upstreamFailures.Add(1)
			last = resp // try the next one, keep this in case none does better
			continue
		}
		free()
		return writeReply(w, req, r, resp)
	}
	if last != nil {
		free()
		return writeReply(w, req, r, last)
	}
	return dns.RcodeServerFailure, &StageError{Stage: f.Name(), Err: errors.Join(errs...)}
}

// exchange is Client.ExchangeContext that also gives up when ctx is cancelled (miekg/dns only
// honours its deadline), so that Close does not wait for upstream timeouts.
func exchange(ctx context.Context, c *dns.Client, m *dns.Msg, addr string) (*dns.Msg, error) {
	conn, err := c.DialContext(ctx, addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	resp, _, err := c.ExchangeWithConnContext(ctx, m, conn)
	return resp, err
}

// upstreamsFor returns the upstreams for a client's networks, a key naming that set (for the
// cache), and false when every network of the client is internal. The first non-internal
// network with its own upstreams wins; otherwise the host's are used. Our own listening
// addresses are never used as upstreams (no loops).
func (s *Server) upstreamsFor(req *request) ([]string, string, bool) {
	var ups []string
	group := ""
	allowed := false
	for _, v := range req.views {
		if v.internal {
			continue
		}
		allowed = true
		if len(v.upstreams) > 0 {
			ups, group = v.upstreams, "net:"+v.name
			break
		}
	}
	if !allowed {
		return nil, "", false
	}
	if ups == nil {
		if p := s.upstreams.Load(); p != nil {
			ups = *p
		}
	}
	for i, u := range ups {
		if s.isSelf(req.snap, u) { // rare: copy without our own addresses
			out := append([]string(nil), ups[:i]...)
			for _, u2 := range ups[i+1:] {
				if !s.isSelf(req.snap, u2) {
					out = append(out, u2)
				}
			}
			return out, group, true
		}
	}
	return ups, group, true
}

func (s *Server) isSelf(snap *snapshot, u string) bool {
	ap, err := netip.ParseAddrPort(u)
	if err != nil {
		return false
	}
	_, ours := snap.byGateway[ap.Addr()]
	return ours && int(ap.Port()) == s.opts.Port
}

// hostUpstreams reads the host's resolvers. When resolvConf lists only loopback stubs (such
// as systemd-resolved's 127.0.0.53) and systemdResolvConf exists with real servers, those
// are used; otherwise the stub is asked (the server runs in the host's netns, so loopback
// works).
func hostUpstreams(resolvConf, systemdResolvConf string) ([]string, error) {
	ups, err := readResolvConf(resolvConf)
	if err != nil {
		return nil, err
	}
	if len(ups) > 0 && allLoopback(ups) {
		if real, err := readResolvConf(systemdResolvConf); err == nil && len(real) > 0 && !allLoopback(real) {
			return real, nil
		}
	}
	return ups, nil
}

// readResolvConf returns the nameservers of a resolv.conf file as ip:port strings.
func readResolvConf(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, &ConfigError{"ResolvConf", path, err.Error()}
	}
	defer f.Close()
	cc, err := dns.ClientConfigFromReader(f)
	if err != nil {
		return nil, &ConfigError{"ResolvConf", path, err.Error()}
	}
	port, err := strconv.ParseUint(cc.Port, 10, 16)
	if err != nil {
		port = DefaultPort
	}
	var out []string
	for _, s := range cc.Servers {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			continue // link-local with zone or garbage: not usable from the host netns reliably
		}
		out = append(out, netip.AddrPortFrom(a.Unmap(), uint16(port)).String())
	}
	return out, nil
}

func allLoopback(ups []string) bool {
	for _, u := range ups {
		ap, err := netip.ParseAddrPort(u)
		if err != nil || !ap.Addr().IsLoopback() {
			return false
		}
	}
	return true
}
