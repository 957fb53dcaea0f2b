package server

import (
	"errors"
	"net"
	"net/netip"
	"runtime"
	"sync"

	"github.com/miekg/dns"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// minUDPReaders is the least number of goroutines reading one UDP socket.
const minUDPReaders = 2

// udpServer serves one bound UDP socket with a few reader goroutines that each read,
// answer and write in turn (forwards go on in goroutines of their own, see forwardStage).
// It replaces miekg/dns's UDP loop, which starts a goroutine per packet. A socket bound to
// one gateway address knows its destination address; the one control message it reads is
// the arrival interface, for the ingress check. TCP still uses miekg/dns's server.
type udpServer struct {
	conn *net.UDPConn
	h    *entryHandler
	in   *ingress
	wg   sync.WaitGroup
}

func startUDP(conn *net.UDPConn, h *entryHandler) *udpServer {
	u := &udpServer{conn: conn, h: h, in: newIngress(h.gw)}
	for range max(minUDPReaders, runtime.GOMAXPROCS(0)) {
		u.wg.Go(u.read)
	}
	return u
}

// readBatch is how many datagrams one read takes at most (recvmmsg): under load a reader
// gets the queue's packets with one system call instead of one each.
const readBatch = 16

// batchReader is ipv4.PacketConn or ipv6.PacketConn (their Message is the same type).
type batchReader interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
}

func (u *udpServer) batchReader() batchReader {
	if a, ok := u.conn.LocalAddr().(*net.UDPAddr); ok && a.IP.To4() == nil {
		return ipv6.NewPacketConn(u.conn)
	}
	return ipv4.NewPacketConn(u.conn)
}

func (u *udpServer) read() {
	ms := make([]ipv4.Message, readBatch)
	for i := range ms {
		ms[i].Buffers = [][]byte{make([]byte, udpReadSize)}
		ms[i].OOB = make([]byte, pktinfoSpace)
	}
	r := u.batchReader()
	w := &udpWriter{conn: u.conn, local: u.conn.LocalAddr()}
	for {
		n, err := r.ReadBatch(ms, 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // a transient error (e.g. ICMP-induced ECONNREFUSED) ends nothing
		}
		for i := range ms[:n] {
			m := &ms[i]
			raddr, ok := m.Addr.(*net.UDPAddr)
			if !ok {
				continue
			}
			u.serve(w, m.Buffers[0][:m.N], m.OOB[:m.NN], raddr.AddrPort())
		}
	}
}

// serve answers one datagram.
func (u *udpServer) serve(w *udpWriter, b, oob []byte, raddr netip.AddrPort) {
	if len(b) < headerLen || isResponse(b) {
		return // never answer answers: no reflection loops
	}
	if ifindex, ok := arrivalIfindex(oob); !ok || !u.in.allowed(ifindex) {
		u.h.s.metrics.wrongInterface.Add(1)
		return // routed in from another network or from outside: a spoofable source
	}
	req := new(dns.Msg)
	if err := req.Unpack(b); err != nil {
		return // garbage gets no reply, as miekg/dns does: a reply could amplify
	}
	w.remote = netip.AddrPortFrom(raddr.Addr().Unmap(), raddr.Port())
	u.h.ServeDNS(w, req)
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
