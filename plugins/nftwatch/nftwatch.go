// Package nftwatch tells its caller that nftables changed in one network namespace: it
// listens on the NFNLGRP_NFTABLES netlink multicast group (every table, chain, rule, set
// and element added or deleted, by nft, iptables-nft, firewalld or moor itself) and
// signals a channel once per message, without blocking. A message lost to a full socket
// buffer (ENOBUFS) is signalled too: the caller re-reads the kernel anyway.
//
// It does not say what changed: its users (the bridge firewall's Repairer, the overlay
// agent's masquerade repair) compare the kernel with what they know, which also covers
// changes that send no event (iptables-legacy), so they keep a periodic check as a
// backstop. A burst of events (a flush is one message per object) is coalesced by the
// channel's one slot; callers wait a little after a signal.
//
// moor's own commits are not signalled. Every nftables transaction ends with a NEWGEN
// message naming the process that committed it (NFTA_GEN_PROC_NAME, the committing
// thread's comm); a transaction committed by a moor program (a name starting with
// "moor", OwnCommit) wrote moor's rules from moor's own state, so there is nothing for a
// repair to find, and checking after each one would cost every ADD a check of every
// attachment of the namespace (the check reads all of moor's rules): O(n) work per ADD,
// O(n²) over a host's life. Changes by anyone else (nft, iptables-nft, firewalld) are
// signalled once their NEWGEN arrives; lost events (ENOBUFS) are signalled at once.
package nftwatch

import (
	"errors"
	"os"
	"strings"
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

// Run signals wake (without blocking) once per transaction that changed something and
// was not moor's own (see the package doc), until Stop (nil) or a receive failing for
// another reason than lost events (that error: events are no longer seen).
func (w *Watcher) Run(wake chan<- struct{}) error {
	_ = w.conn.SetDeadline(time.Time{})
	signal := func() {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	changed := false // objects changed since the last NEWGEN
	for {
		msgs, err := w.conn.Receive()
		var oe *netlink.OpError
		if err != nil {
			if errors.As(err, &oe) && errors.Is(oe.Err, unix.ENOBUFS) {
				changed = false
				signal() // lost events: whoever made them, look
				continue
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return nil
			}
			return err
		}
		for _, m := range msgs {
			name, ok := commitBy(m)
			if !ok {
				changed = true
				continue
			}
			if changed && !OwnCommit(name) {
				signal()
			}
			changed = false
		}
	}
}

// newGen is the message type of the NEWGEN message that ends every transaction.
const newGen = netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWGEN)

// commitBy reports whether m is a NEWGEN message and the name of the process that
// committed the transaction ("" when the kernel did not say).
func commitBy(m netlink.Message) (string, bool) {
	if m.Header.Type != newGen {
		return "", false
	}
	if len(m.Data) < 4 { // struct nfgenmsg precedes the attributes
		return "", true
	}
	ad, err := netlink.NewAttributeDecoder(m.Data[4:])
	if err != nil {
		return "", true
	}
	name := ""
	for ad.Next() {
		if ad.Type() == unix.NFTA_GEN_PROC_NAME {
			name = ad.String()
		}
	}
	return name, true
}

// OwnCommit reports whether a transaction committed by the process named name is moor's
// own: moor's programs are all named moor or moor-<something> (the kernel keeps 15
// bytes of the name, enough for the prefix). An unnamed commit is not moor's.
func OwnCommit(name string) bool {
	return name == "moor" || strings.HasPrefix(name, "moor-")
}

// Stop makes Run return.
func (w *Watcher) Stop() { _ = w.conn.SetDeadline(time.Now()) }

// Close releases the socket; Run must have returned.
func (w *Watcher) Close() error { return w.conn.Close() }
