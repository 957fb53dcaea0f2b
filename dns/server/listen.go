package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// Listener tuning.
const (
	udpReadSize     = dns.DefaultMsgSize // read buffer for UDP queries (EDNS queries may exceed 512)
	listenerStopMax = 2 * time.Second    // time given to a listener to finish in-flight queries
)

// ListenError reports a gateway address that could not be bound.
type ListenError struct {
	Addr string
	Err  error
}

func (e *ListenError) Error() string { return fmt.Sprintf("listen on %s: %v", e.Addr, e.Err) }

// Unwrap exposes the cause.
func (e *ListenError) Unwrap() error { return e.Err }

// listener serves one gateway address over UDP and TCP.
type listener struct {
	udp *udpServer
	tcp *dns.Server
}

// listeners tracks the sockets per gateway address. Addresses only come and go with
// networks: record changes never touch them.
type listeners struct {
	mu   sync.Mutex
	live map[netip.Addr]*listener
	errs map[netip.Addr]error
}

// sync starts listeners for new addresses (and retries failed ones) and stops those of
// addresses no network uses any more.
func (s *Server) syncListeners(want []netip.Addr) {
	s.ln.mu.Lock()
	defer s.ln.mu.Unlock()
	if s.ln.live == nil {
		s.ln.live = map[netip.Addr]*listener{}
		s.ln.errs = map[netip.Addr]error{}
	}
	wanted := make(map[netip.Addr]bool, len(want))
	for _, a := range want {
		wanted[a] = true
		if s.ln.live[a] != nil {
			continue
		}
		l, err := s.listen(a)
		if err != nil {
			s.ln.errs[a] = err
			s.log.Error("cannot listen on gateway address", "addr", a, "err", err)
			continue
		}
		delete(s.ln.errs, a)
		s.ln.live[a] = l
		s.log.Info("listening", "addr", netip.AddrPortFrom(a, uint16(s.opts.Port)))
	}
	for a, l := range s.ln.live {
		if !wanted[a] {
			l.stop()
			delete(s.ln.live, a)
			s.log.Info("stopped listening", "addr", a)
		}
	}
	for a := range s.ln.errs {
		if !wanted[a] {
			delete(s.ln.errs, a)
		}
	}
}

// listenErrors returns the current bind failures.
func (s *Server) listenErrors() []error {
	s.ln.mu.Lock()
	defer s.ln.mu.Unlock()
	var out []error
	for _, err := range s.ln.errs {
		out = append(out, err)
	}
	return out
}

// Addrs returns the addresses (ip:port) the server currently listens on.
func (s *Server) Addrs() []string {
	s.ln.mu.Lock()
	defer s.ln.mu.Unlock()
	var out []string
	for a := range s.ln.live {
		out = append(out, netip.AddrPortFrom(a, uint16(s.opts.Port)).String())
	}
	return out
}

func (s *Server) stopListeners() {
	s.ln.mu.Lock()
	defer s.ln.mu.Unlock()
	var wg sync.WaitGroup
	for a, l := range s.ln.live {
		wg.Go(l.stop)
		delete(s.ln.live, a)
	}
	wg.Wait()
}

// listen binds UDP and TCP on a:port. IP_FREEBIND lets it bind a gateway address that is
// not (yet) configured on a bridge; no wildcard address is ever bound.
func (s *Server) listen(a netip.Addr) (*listener, error) {
	addr := net.JoinHostPort(a.String(), strconv.Itoa(s.opts.Port))
	if a.IsUnspecified() {
		return nil, &ListenError{Addr: addr, Err: errors.New("refusing to bind a wildcard address")}
	}
	lc := net.ListenConfig{Control: sockopts}
	pc, err := lc.ListenPacket(context.Background(), "udp", addr)
	if err != nil {
		return nil, &ListenError{Addr: addr, Err: err}
	}
	tl, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		_ = pc.Close()
		return nil, &ListenError{Addr: addr, Err: err}
	}
	tcp := &dns.Server{Listener: &tcpLimitListener{Listener: tl, s: s}, Handler: &entryHandler{s: s, gw: a, tcp: true},
		ReadTimeout: s.opts.TCPIdleTimeout, IdleTimeout: func() time.Duration { return s.opts.TCPIdleTimeout }}
	if err := startDNS(tcp); err != nil {
		_ = pc.Close()
		_ = tl.Close()
		return nil, &ListenError{Addr: addr, Err: err}
	}
	udp, err := startUDP(pc.(*net.UDPConn), &entryHandler{s: s, gw: a})
	if err != nil {
		_ = pc.Close()
		_ = tcp.Shutdown()
		return nil, &ListenError{Addr: addr, Err: err}
	}
	return &listener{udp: udp, tcp: tcp}, nil
}

// startDNS runs srv in a goroutine and waits until it serves.
func startDNS(srv *dns.Server) error {
	started := make(chan struct{})
	errc := make(chan error, 1) // buffered: the goroutine never blocks
	srv.NotifyStartedFunc = func() { close(started) }
	go func() { errc <- srv.ActivateAndServe() }()
	select {
	case <-started:
		return nil
	case err := <-errc:
		return err
	}
}

func (l *listener) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), listenerStopMax)
	defer cancel()
	l.udp.stop()
	_ = l.tcp.ShutdownContext(ctx) // already stopped: nothing to do
}

// sockopts sets IP_FREEBIND, and on UDP sockets asks for the arrival interface of each
// packet (IP_PKTINFO, IPV6_RECVPKTINFO) for the ingress check.
func sockopts(network, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		v6 := strings.HasSuffix(network, "6")
		if v6 {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_FREEBIND, 1)
		} else {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1)
		}
		if serr != nil || !strings.HasPrefix(network, "udp") {
			return
		}
		if v6 {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_RECVPKTINFO, 1)
		} else {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_PKTINFO, 1)
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// entryHandler adapts miekg/dns to the chain for one listening socket: it knows the address
// the query arrived on, so scoping needs no per-packet control messages.
type entryHandler struct {
	s   *Server
	gw  netip.Addr
	tcp bool
}

func (h *entryHandler) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	req := &request{gateway: h.gw, tcp: h.tcp, snap: h.s.snap.Load()}
	if uw, ok := w.(interface{ remoteAddrPort() netip.AddrPort }); ok {
		req.src = uw.remoteAddrPort().Addr().Unmap()
	} else {
		switch a := w.RemoteAddr().(type) {
		case *net.UDPAddr:
			req.src = a.AddrPort().Addr().Unmap()
		case *net.TCPAddr:
			req.src = a.AddrPort().Addr().Unmap()
		}
	}
	ctx := context.WithValue(h.s.baseCtx, requestKey{}, req)
	rc, err := h.s.chain.ServeDNS(ctx, w, r)
	if req.async {
		return // a goroutine answers
	}
	h.s.finish(w, req, r, rc, err)
}

// finish logs a failed query and, when no stage wrote a reply, writes one with rc
// (SERVFAIL when rc claims a reply that was never written).
func (s *Server) finish(w dns.ResponseWriter, req *request, r *dns.Msg, rc int, err error) {
	if err != nil {
		s.log.Debug("query failed", "q", questionString(r), "client", req.src, "err", err)
	}
	if req.written {
		return
	}
	if ClientWrite(rc) {
		rc = dns.RcodeServerFailure // a stage claimed to write but did not
	}
	m := new(dns.Msg)
	m.SetRcode(r, rc)
	m.RecursionAvailable = true
	if _, err := writeReply(w, req, r, m); err != nil {
		s.log.Debug("write reply", "client", req.src, "err", err)
	}
}
