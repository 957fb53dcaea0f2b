package server

import (
	"errors"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// cpusPerUDPReader is how many CPUs make one goroutine reading a UDP socket: one reader
// per socket on a machine of one or two CPUs, more on larger ones. Most of a query's cost
// is the kernel's (receiving, and sending the answer through the bridge to the client),
// which runs on whichever CPU is free; a second reader on a socket of a 2-CPU machine only
// added wake-ups between threads (about a fifth more CPU time per query, measured with
// dnsperf at saturation) and gave no more answers. A reader never waits on a forward
// (forwards run in goroutines of their own).
const cpusPerUDPReader = 2

// udpServer serves one bound UDP socket with reader goroutines (see cpusPerUDPReader) that
// each read a batch, answer it and write the answers in turn (forwards go on in goroutines
// of their own, see forwardStage). It replaces miekg/dns's UDP loop, which starts a
// goroutine per packet. A socket bound to one gateway address knows its destination
// address; the one control message it reads is the arrival interface, for the ingress
// check. Queries of the common shape are answered by the fast path (fast.go), the others
// by the chain. A datagram longer than the read buffer (udpReadSize) is dropped: no query
// a client sends over UDP is that long. TCP still uses miekg/dns's server.
type udpServer struct {
	conn *net.UDPConn
	h    *entryHandler
	in   *ingress
	fast bool // the chain is DefaultChain: the fast path may stand in for it
	ttl  uint32
	wg   sync.WaitGroup
}

func startUDP(conn *net.UDPConn, h *entryHandler) (*udpServer, error) {
	u := &udpServer{conn: conn, h: h, in: newIngress(h.gw), fast: fastEligible(h.s.opts.Chain), ttl: uint32(h.s.opts.TTL.Seconds())}
	readers := max(1, runtime.GOMAXPROCS(0)/cpusPerUDPReader)
	batches := make([]*mmsgBatch, 0, readers)
	for range readers {
		b, err := newMmsgBatch(conn)
		if err != nil {
			return nil, err
		}
		batches = append(batches, b)
	}
	for _, b := range batches {
		u.wg.Go(func() { u.read(b) })
	}
	return u, nil
}

// reader is one reader goroutine's state.
type reader struct {
	w     *udpWriter
	name  []byte      // the fast path's lowercase query name
	gate  ingressMemo // the last ingress verdict
	batch *mmsgBatch
}

func (u *udpServer) read(b *mmsgBatch) {
	r := &reader{
		w:     &udpWriter{conn: u.conn, local: u.conn.LocalAddr()},
		name:  make([]byte, maxNameLen+1),
		batch: b,
	}
	for {
		n, err := b.recv()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // a transient error (e.g. ICMP-induced ECONNREFUSED) ends nothing
		}
		for i := range n {
			data, oob, src, ok := b.packet(i)
			if ok {
				u.serve(r, i, data, oob, src)
			}
		}
		b.flush()
	}
}

// serve answers datagram i of r's batch: by the fast path into the batch's answers, or by
// the chain, which writes its answer itself.
func (u *udpServer) serve(r *reader, i int, b, oob []byte, raddr netip.AddrPort) {
	if len(b) < headerLen || isResponse(b) {
		return // never answer answers: no reflection loops
	}
	now := time.Now()
	if ifindex, ok := arrivalIfindex(oob); !ok || !r.gate.allowed(u.in, ifindex, now) {
		u.h.s.metrics.wrongInterface.Add(1)
		return // routed in from another network or from outside: a spoofable source
	}
	src := raddr.Addr().Unmap()
	if u.fast {
		if q, n, ok := parseFast(b, r.name); ok {
			snap := u.h.s.snap.Load()
			if ans, rcode, ok := fastAnswer(r.batch.answerBuf(i), q, r.name[:n], snap.scope(u.h.gw, src), u.ttl); ok {
				r.batch.queue(i, ans)
				u.h.s.metrics.observe(rcode, time.Since(now))
				return
			}
		}
	}
	req := new(dns.Msg)
	if err := req.Unpack(b); err != nil {
		return // garbage gets no reply, as miekg/dns does: a reply could amplify
	}
	r.w.remote = netip.AddrPortFrom(src, raddr.Port())
	u.h.ServeDNS(r.w, req)
}

// stop closes the socket and waits for the readers to finish their current query.
func (u *udpServer) stop() {
	_ = u.conn.Close()
	u.wg.Wait()
}

// DNS header layout bits used before unpacking.
const (
	headerLen  = 12
	flagsByte  = 2    // the byte holding QR, opcode, AA, TC, RD
	responseQR = 0x80 // the QR bit in that byte
)

func isResponse(b []byte) bool { return b[flagsByte]&responseQR != 0 }

// udpWriter is the ResponseWriter of one reader goroutine; it is reused for every query
// that goroutine serves, with its pack buffer.
type udpWriter struct {
	conn   *net.UDPConn
	local  net.Addr
	remote netip.AddrPort
	buf    []byte
}

var _ dns.ResponseWriter = (*udpWriter)(nil)

func (w *udpWriter) LocalAddr() net.Addr { return w.local }

// RemoteAddr allocates; the entry handler uses remoteAddrPort instead.
func (w *udpWriter) RemoteAddr() net.Addr { return net.UDPAddrFromAddrPort(w.remote) }

func (w *udpWriter) remoteAddrPort() netip.AddrPort { return w.remote }

func (w *udpWriter) WriteMsg(m *dns.Msg) error {
	if cap(w.buf) < udpReadSize {
		w.buf = make([]byte, udpReadSize)
	}
	b, err := m.PackBuffer(w.buf[:cap(w.buf)])
	if err != nil {
		return err
	}
	_, err = w.conn.WriteToUDPAddrPort(b, w.remote)
	return err
}

// detach returns a writer for the same client that owns its own buffer, for an answer
// written after the reader moved on to the next packet.
func (w *udpWriter) detach() dns.ResponseWriter {
	return &udpWriter{conn: w.conn, local: w.local, remote: w.remote}
}

func (w *udpWriter) Write(b []byte) (int, error) { return w.conn.WriteToUDPAddrPort(b, w.remote) }

// Close does nothing: the socket is shared by every client.
func (w *udpWriter) Close() error { return nil }

func (w *udpWriter) TsigStatus() error   { return nil }
func (w *udpWriter) TsigTimersOnly(bool) {}
func (w *udpWriter) Hijack()             {}
