package firewall

import (
	"fmt"

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

// conn returns a fresh connection (one batch per operation) bound to Options.NetNS.
func (b *nftBackend) conn() (*nftables.Conn, error) {
	o := []nftables.ConnOption{nftables.WithSockOptions(bigBuffers)}
	if b.opts.NetNS != nil {
		o = append(o, nftables.WithNetNSFd(int(b.opts.NetNS.Fd())))
	}
	c, err := nftables.New(o...)
	if err != nil {
		return nil, b.fail("open netlink connection", err)
	}
	return c, nil
}

// begin takes the host lock and opens the connection of one mutating operation.
func (b *nftBackend) begin() (*nftables.Conn, func(), error) {
	unlock, err := hostLock(b.opts.LockFile, b.opts.LockTimeout)
	if err != nil {
		return nil, nil, err
	}
	c, err := b.conn()
	if err != nil {
		unlock()
		return nil, nil, err
	}
	return c, unlock, nil
}
