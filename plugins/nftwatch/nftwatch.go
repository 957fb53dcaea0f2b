// Package nftwatch tells its caller that nftables changed in one network namespace: it
// listens on the NFNLGRP_NFTABLES netlink multicast group (every table, chain, rule, set
// and element added or deleted, by nft, iptables-nft, firewalld or moor itself) and
// signals a channel once per message, without blocking. A message lost to a full socket
// buffer (ENOBUFS) is signalled too: the caller re-reads the kernel anyway.
//
// It does not say what changed or decode messages: its users (the bridge firewall's
// Repairer, the overlay agent's masquerade repair) compare the kernel with what they
// know, which also covers changes that send no event (iptables-legacy), so they keep a
// periodic check as a backstop. A burst of events (a flush is one message per object)
// is coalesced by the channel's one slot; callers wait a little after a signal.
package nftwatch

import (
	"errors"
	"os"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Watcher is an open event socket.
type Watcher struct {
	conn *netlink.Conn
}

// Open subscribes to the nftables events of the namespace of nsFd (0: the calling
// thread's). It needs CAP_NET_ADMIN in that namespace only to open; Run needs nothing.
func Open(nsFd int) (*Watcher, error) {
	cfg := &netlink.Config{Groups: 1 << (unix.NFNLGRP_NFTABLES - 1)}
	if nsFd > 0 {
		cfg.NetNS = nsFd
	}
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, cfg)
	if err != nil {
		return nil, err
	}
	return &Watcher{conn: c}, nil
}

// Run signals wake (without blocking) on every message until Stop (nil) or a receive
// failing for another reason than lost events (that error: events are no longer seen).
func (w *Watcher) Run(wake chan<- struct{}) error {
	_ = w.conn.SetDeadline(time.Time{})
	for {
		_, err := w.conn.Receive()
		var oe *netlink.OpError
		if err != nil && !(errors.As(err, &oe) && errors.Is(oe.Err, unix.ENOBUFS)) {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return nil
			}
			return err
		}
		select {
		case wake <- struct{}{}:
		default:
		}
	}
}

// Stop makes Run return.
func (w *Watcher) Stop() { _ = w.conn.SetDeadline(time.Now()) }

// Close releases the socket; Run must have returned.
func (w *Watcher) Close() error { return w.conn.Close() }
