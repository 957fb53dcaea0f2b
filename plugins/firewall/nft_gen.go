package firewall

// The verified record: how an ADD to a network whose rules are in place skips its reads.
//
// nf_tables numbers the generations of a netns's ruleset: every commit there (any table,
// any tool: nft, iptables-nft, firewalld, moor) increments the number, which one
// NFT_MSG_GETGEN request returns. When EnsureNetwork has read a network's state and found
// it in place without anything committed meanwhile (the generation before its reads
// equals the one after), it records the netns (its cookie, a 64-bit number the kernel
// never reuses, unlike a netns inode) and that generation with the network's
// fingerprint, in a file beside the firewall lock. An EnsureNetwork that finds the same
// netns at the same generation and its fingerprint in the record knows that nothing in
// the ruleset changed since it was verified: it reads and writes nothing else, and takes
// no lock (it only reads, and what it read held at one instant). A commit anywhere
// invalidates every entry: the next ADD reads as before and records again.
//
// The fingerprint covers everything the reads are compared against: the whole Network
// (name, bridge, subnets, gateways, every option) and the running binary (a moor upgrade
// may want other skeleton rules). Records are only written after a verification that
// committed nothing: after a commit the generation moved by our own hand, and one more
// ADD (which commits nothing) records it. The exception is the published ports' own
// batches (AddAttachment, DelAttachment): they change only port-map elements, which no
// network's verification covers, so when such a batch was the only commit the record
// moves to the new generation (advanceVerified), and an ADD with published ports skips
// the network's reads too. What this does not do: anything for the iptables backend
// (iptables-legacy has no generation).

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/plugins/namehash"
	"github.com/moornet/moor/plugins/statefs"
)

// verifiedFileName is the record's file, in the directory of Options.LockFile.
const verifiedFileName = "nft-verified"

// genStamp identifies one generation of one netns's ruleset.
type genStamp struct {
	cookie uint64
	gen    uint32
}

func (s genStamp) String() string { return fmt.Sprintf("%d %d", s.cookie, s.gen) }

// stampOf returns the netns cookie and current ruleset generation seen through nl.
func stampOf(nl *netlink.Conn) (genStamp, error) {
	var s genStamp
	rc, err := nl.SyscallConn()
	if err != nil {
		return s, err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		s.cookie, serr = unix.GetsockoptUint64(int(fd), unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	}); err != nil {
		return s, err
	}
	if serr != nil {
		return s, fmt.Errorf("netns cookie: %w", serr)
	}
	s.gen, err = rulesetGeneration(nl)
	return s, err
}

// getgenRequest is NFT_MSG_GETGEN for any family, as rulesetGeneration sends it.
func getgenRequest() netlink.Message {
	return netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETGEN), Flags: netlink.Request},
		Data:   []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0},
	}
}

// rulesetGeneration asks for the ruleset's generation number (NFT_MSG_GETGEN).
func rulesetGeneration(nl *netlink.Conn) (uint32, error) {
	msgs, err := nl.Execute(getgenRequest())
	if err != nil {
		return 0, fmt.Errorf("ruleset generation: %w", err)
	}
	for _, m := range msgs {
		if gen, ok, err := genOf(m.Data); ok || err != nil {
			return gen, err
		}
	}
	return 0, errors.New("ruleset generation: no NFTA_GEN_ID in the reply")
}

// genOf returns NFTA_GEN_ID of a NFT_MSG_NEWGEN message's payload; ok is false when the
// payload has none.
func genOf(data []byte) (gen uint32, ok bool, err error) {
	if len(data) < nfgenmsgLen {
		return 0, false, nil
	}
	ad, err := netlink.NewAttributeDecoder(data[nfgenmsgLen:])
	if err != nil {
		return 0, false, fmt.Errorf("ruleset generation: %w", err)
	}
	ad.ByteOrder = binary.BigEndian
	for ad.Next() {
		if ad.Type() == unix.NFTA_GEN_ID {
			return ad.Uint32(), true, nil
		}
	}
	return 0, false, nil
}

// probeStamp reads the stamp of Options.NetNS through a socket of its own, for the probe
// that every ADD takes. It is a plain blocking socket driven by system calls (one socket,
// one getsockopt, one send, one receive, one close) rather than a netlink.Conn: the
// kernel answers a netlink request within the send, so nothing waits, and the probe
// skips what a Conn sets up for a long conversation (a runtime poller registration,
// socket options, a seeded random sequence number), which cost more than the request.
// The operations' own reads and batches keep their netlink.Conn (stampOn).
func (b *nftBackend) probeStamp() (genStamp, error) {
	var s genStamp
	fd := -1
	open := func() (err error) {
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
		return err
	}
	var err error
	if b.opts.NetNS != nil {
		err = b.opts.NetNS.Do(func(ns.NetNS) error { return open() })
	} else {
		err = open()
	}
	if err != nil {
		return s, fmt.Errorf("netfilter socket: %w", err)
	}
	defer unix.Close(fd)
	if s.cookie, err = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE); err != nil {
		return s, fmt.Errorf("netns cookie: %w", err)
	}
	// A bound on the receive, should a kernel ever not answer within the send.
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5})
	req := getgenRequest()
	req.Header.Sequence = 1
	req.Header.Length = uint32(unix.NLMSG_HDRLEN + len(req.Data))
	raw, err := req.MarshalBinary()
	if err != nil {
		return s, err
	}
	if err := unix.Sendto(fd, raw, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return s, fmt.Errorf("ruleset generation: %w", err)
	}
	buf := make([]byte, 4096)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return s, fmt.Errorf("ruleset generation: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return s, fmt.Errorf("ruleset generation: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Seq != 1 {
				continue // not our answer (nothing else is sent on this socket)
			}
			if m.Header.Type == unix.NLMSG_ERROR {
				if len(m.Data) >= 4 {
					if errno := int32(binary.NativeEndian.Uint32(m.Data[:4])); errno != 0 {
						return s, fmt.Errorf("ruleset generation: %w", syscall.Errno(-errno))
					}
				}
				return s, errors.New("ruleset generation: acknowledged without a generation")
			}
			gen, ok, err := genOf(m.Data)
			if err != nil {
				return s, err
			}
			if ok {
				s.gen = gen
				return s, nil
			}
		}
	}
}

// verifiedPath is the record's path.
func (b *nftBackend) verifiedPath() string {
	return filepath.Join(filepath.Dir(b.opts.LockFile), verifiedFileName)
}

// exeIdentity names the running binary by what changes when it is replaced.
var exeIdentity = sync.OnceValue(func() string {
	fi, err := os.Stat("/proc/self/exe")
	if err != nil {
		return "unknown"
	}
	id := fmt.Sprintf("%d %d", fi.Size(), fi.ModTime().UnixNano())
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id += fmt.Sprintf(" %d %d", st.Dev, st.Ino)
	}
	return id
})

// fingerprint is the network's identity in the record ("" when it cannot be computed,
// which nothing matches).
func fingerprint(n Network) string {
	var b bytes.Buffer
	if !hashValue(&b, reflect.ValueOf(n)) {
		return ""
	}
	b.WriteString(exeIdentity())
	sum := namehash.Sum256(b.Bytes())
	return hex.EncodeToString(sum[:16])
}

// hashValue writes v to h, for hashing: every field by name, every value with its length or a nil
// mark, so that two different values never write the same bytes. It walks the type
// rather than naming Network's fields, so a field added later is covered without a
// change here; a kind it does not know (a map, a func...) makes it return false, and
// the network is then never recorded (its reads are never skipped), never wrongly
// matched. (It replaces encoding/json, whose type analysis on first use cost an ADD
// more than the probe it serves.)
func hashValue(h *bytes.Buffer, v reflect.Value) bool {
	var num [8]byte
	putLen := func(n int) {
		binary.BigEndian.PutUint64(num[:], uint64(n))
		h.Write(num[:])
	}
	switch v.Kind() {
	case reflect.String:
		putLen(v.Len())
		h.Write([]byte(v.String()))
	case reflect.Bool:
		if v.Bool() {
			h.Write([]byte{1})
		} else {
			h.Write([]byte{0})
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		putLen(int(v.Int()))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		putLen(int(v.Uint()))
	case reflect.Slice:
		if v.IsNil() {
			h.Write([]byte{'n'})
			return true
		}
		h.Write([]byte{'s'})
		putLen(v.Len())
		if v.Type().Elem().Kind() == reflect.Uint8 {
			h.Write(v.Bytes())
			return true
		}
		for i := range v.Len() {
			if !hashValue(h, v.Index(i)) {
				return false
			}
		}
	case reflect.Pointer:
		if v.IsNil() {
			h.Write([]byte{'n'})
			return true
		}
		h.Write([]byte{'p'})
		return hashValue(h, v.Elem())
	case reflect.Struct:
		t := v.Type()
		putLen(t.NumField())
		for i := range t.NumField() {
			putLen(len(t.Field(i).Name))
			h.Write([]byte(t.Field(i).Name))
			if !hashValue(h, v.Field(i)) {
				return false
			}
		}
	default:
		return false
	}
	return true
}

// readVerified returns the record's stamp and its network → fingerprint entries; a
// missing or unreadable record is empty.
func (b *nftBackend) readVerified() (genStamp, map[string]string) {
	var s genStamp
	f, err := statefs.OpenFile(b.verifiedPath(), os.O_RDONLY, 0)
	if err != nil {
		return s, nil
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return s, nil
	}
	head := strings.Fields(sc.Text())
	if len(head) != 2 {
		return s, nil
	}
	cookie, err1 := strconv.ParseUint(head[0], 10, 64)
	gen, err2 := strconv.ParseUint(head[1], 10, 32)
	if err1 != nil || err2 != nil {
		return s, nil
	}
	entries := map[string]string{}
	for sc.Scan() {
		if name, fp, ok := strings.Cut(sc.Text(), " "); ok {
			entries[name] = fp
		}
	}
	return genStamp{cookie: cookie, gen: uint32(gen)}, entries
}

// writeVerified records that network n was in place at stamp s, keeping the entries of
// other networks recorded at the same stamp. Called under the host lock; the file is
// replaced atomically, so readers without the lock see the old or the new record.
// Failing to record only costs the next ADD its reads: errors are dropped.
func (b *nftBackend) writeVerified(s genStamp, n Network) {
	b.recordVerified(s, s, &n)
}

// verifiedAt reports whether the record holds network n at exactly stamp s.
func (b *nftBackend) verifiedAt(s genStamp, n Network) bool {
	rec, entries := b.readVerified()
	fp, ok := entries[n.Name]
	return rec == s && ok && fp != "" && fp == fingerprint(n)
}

// advanceVerified keeps the record true across an operation's own batch of published-port
// elements (the port maps are not part of any network's verified state). before is the
// stamp read on c under the host lock before the operation's reads; committed tells
// whether its batch held anything. When the generation after the batch is before's plus
// that one commit, nothing else committed in between: the entries recorded at before (and
// found, when not nil: a network the operation read and found in place) are written at
// the new stamp. Otherwise nothing is written, and the next ADD reads.
func (b *nftBackend) advanceVerified(c *nftables.Conn, before genStamp, committed bool, found *Network) {
	after, ok := stampOn(c)
	step := uint32(0)
	if committed {
		step = 1
	}
	if !ok || after.cookie != before.cookie || after.gen != before.gen+step {
		return
	}
	b.recordVerified(before, after, found)
}

// recordVerified writes the record at stamp to with the entries recorded at stamp from,
// plus n when not nil; with nothing to record it writes nothing.
func (b *nftBackend) recordVerified(from, to genStamp, n *Network) {
	old, entries := b.readVerified()
	if old != from || entries == nil {
		entries = map[string]string{}
	}
	changed := old != to
	if n != nil {
		fp := fingerprint(*n)
		if fp != "" && !strings.ContainsAny(n.Name, " \n") && entries[n.Name] != fp {
			entries[n.Name] = fp
			changed = true
		}
	}
	if !changed || len(entries) == 0 {
		return
	}
	var sb strings.Builder
	sb.WriteString(to.String() + "\n")
	for name, f := range entries {
		sb.WriteString(name + " " + f + "\n")
	}
	path := b.verifiedPath()
	tmp := fmt.Sprintf("%s.%d", path, os.Getpid())
	f, err := statefs.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return
	}
	_, werr := f.WriteString(sb.String())
	if cerr := f.Close(); werr != nil || cerr != nil {
		_ = os.Remove(tmp)
		return
	}
	if os.Rename(tmp, path) != nil {
		_ = os.Remove(tmp)
	}
}

// verifiedProbe is one reading of the record that matched the ruleset's generation.
type verifiedProbe struct {
	at      time.Time
	entries map[string]string
}

// probeFresh bounds how old a probe taken by New may be when EnsureNetwork uses it: an
// invocation goes from one to the other in milliseconds, while a long-lived caller must
// not trust a reading of long ago.
const probeFresh = 250 * time.Millisecond

// probeVerified reads the current stamp (one socket, one request) and the record, and
// reports whether the record was written at that stamp; if so its entries are kept in
// b.probe for the next inPlace.
func (b *nftBackend) probeVerified() bool {
	b.probe = nil
	now, err := b.probeStamp()
	if err != nil {
		return false
	}
	rec, entries := b.readVerified()
	if rec != now || len(entries) == 0 {
		return false
	}
	b.probe = &verifiedProbe{at: time.Now(), entries: entries}
	return true
}

// inPlace reports whether the record says network n is in place now. It uses the probe
// New took when it is fresh, else probes; either way the probe is used once.
func (b *nftBackend) inPlace(n Network) bool {
	if b.probe == nil || time.Since(b.probe.at) > probeFresh {
		b.probeVerified()
	}
	p := b.probe
	b.probe = nil
	if p == nil {
		return false
	}
	fp, ok := p.entries[n.Name]
	return ok && fp != "" && fp == fingerprint(n)
}

// stampOn reads the stamp through the socket of the operation's connection c.
func stampOn(c *nftables.Conn) (genStamp, bool) {
	v, ok := rawConns.Load(c)
	if !ok {
		return genStamp{}, false
	}
	s, err := stampOf(v.(*netlink.Conn))
	return s, err == nil
}
