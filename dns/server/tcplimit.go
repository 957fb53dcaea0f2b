package server

import (
	"net"
	"net/netip"
	"sync"
)

// tcpLimitListener bounds the TCP connections the server holds open, in all and per client
// address (Server.tcpConns, shared by every gateway's listener). A connection past a bound is
// closed as soon as it is accepted, with a reset so that it leaves no TIME_WAIT behind; the
// client retries or falls back to UDP. Each connection is one descriptor: without the bound,
// one container opening connections and never writing could exhaust the server's.
type tcpLimitListener struct {
	net.Listener
	s *Server
}

func (l *tcpLimitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		var client netip.Addr
		if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
			client = ta.AddrPort().Addr().Unmap()
		}
		if !l.s.tcpConns.acquire(client, "") {
			l.s.metrics.tcpRefused.Add(1)
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			_ = c.Close()
			continue
		}
		return &limitedConn{Conn: c, release: sync.OnceFunc(func() { l.s.tcpConns.release(client, "") })}, nil
	}
}

// limitedConn gives its slot back when closed (miekg/dns closes every connection it
// accepted: on an idle or read timeout, on EOF and on shutdown).
type limitedConn struct {
	net.Conn
	release func()
}

func (c *limitedConn) Close() error {
	c.release()
	return c.Conn.Close()
}
