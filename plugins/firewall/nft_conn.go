package firewall

import (
	"fmt"
	"sync"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// nlBufferSize is the netlink socket's send and receive buffer (SO_SNDBUFFORCE,
// SO_RCVBUFFORCE; the kernel doubles it). With the defaults (about 208 KiB) a batch over
// that size is refused ("message too long"), as is one with more than about 250 messages,
// whose acknowledgements (one per message, about 2 KB each in the receive queue)
// overflow the receive buffer ("no buffer space available"). The ADD of MaxPortMappings
// published ports is about 600 KB in a few dozen messages. The memory is only used by a
// batch that needs it. One operation stays one batch, so it stays one transaction.
const nlBufferSize = 8 << 20

func bigBuffers(c *netlink.Conn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		for _, opt := range []int{unix.SO_SNDBUFFORCE, unix.SO_RCVBUFFORCE} {
			if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt, nlBufferSize); e != nil && serr == nil {
				serr = fmt.Errorf("setsockopt %d: %w", opt, e)
			}
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// conn opens the connection of one operation, bound to Options.NetNS: one netlink socket
// (a lasting connection) for all of the operation's reads and its batch, closed by done.
// Each read on a transient connection would open a socket of its own (a dozen per ADD).
// The connection is not shared between operations: a failed operation may leave queued
// messages behind, which must never reach another operation's batch. The socket is also
// kept for readLabels (rawConns), which reads on it between the library's requests.
func (b *nftBackend) conn() (c *nftables.Conn, done func(), err error) {
	var raw *netlink.Conn
	keep := func(nc *netlink.Conn) error { raw = nc; return nil }
	o := []nftables.ConnOption{nftables.AsLasting(), nftables.WithSockOptions(bigBuffers, keep)}
	if b.opts.NetNS != nil {
		o = append(o, nftables.WithNetNSFd(int(b.opts.NetNS.Fd())))
	}
	c, err = nftables.New(o...)
	if err != nil {
		return nil, nil, b.fail("open netlink connection", err)
	}
	if raw != nil {
		rawConns.Store(c, raw)
	}
	return c, func() { rawConns.Delete(c); _ = c.CloseLasting() }, nil
}

// rawConns maps an operation's connection to its netlink socket while it is open.
var rawConns sync.Map // *nftables.Conn -> *netlink.Conn

// begin takes the host lock and opens the connection of one mutating operation; done
// closes the connection and releases the lock.
func (b *nftBackend) begin() (*nftables.Conn, func(), error) {
	unlock, err := b.opts.lock()
	if err != nil {
		return nil, nil, err
	}
	c, closeConn, err := b.conn()
	if err != nil {
		unlock()
		return nil, nil, err
	}
	return c, func() { closeConn(); unlock() }, nil
}
