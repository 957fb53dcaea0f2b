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
// ADD (which commits nothing) records it. What this does not do: skip anything for
// AddAttachment (published ports commit on every ADD) or for the iptables backend
// (iptables-legacy has no generation).

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

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

// nlNetfilter dials a netfilter netlink socket in Options.NetNS.
func (b *nftBackend) nlNetfilter() (*netlink.Conn, error) {
	cfg := &netlink.Config{}
	if b.opts.NetNS != nil {
		cfg.NetNS = int(b.opts.NetNS.Fd())
	}
	return netlink.Dial(unix.NETLINK_NETFILTER, cfg)
}

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

// rulesetGeneration asks for the ruleset's generation number (NFT_MSG_GETGEN).
func rulesetGeneration(nl *netlink.Conn) (uint32, error) {
	req := netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETGEN), Flags: netlink.Request},
		Data:   []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0},
	}
	msgs, err := nl.Execute(req)
	if err != nil {
		return 0, fmt.Errorf("ruleset generation: %w", err)
	}
	for _, m := range msgs {
		if len(m.Data) < nfgenmsgLen {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[nfgenmsgLen:])
		if err != nil {
			return 0, fmt.Errorf("ruleset generation: %w", err)
		}
		ad.ByteOrder = binary.BigEndian
		for ad.Next() {
			if ad.Type() == unix.NFTA_GEN_ID {
				return ad.Uint32(), nil
			}
		}
	}
	return 0, errors.New("ruleset generation: no NFTA_GEN_ID in the reply")
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
	raw, err := json.Marshal(n)
	if err != nil {
		return ""
	}
	sum := namehash.Sum256(append(raw, exeIdentity()...))
	return hex.EncodeToString(sum[:16])
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
	fp := fingerprint(n)
	if fp == "" || strings.ContainsAny(n.Name, " \n") {
		return
	}
	old, entries := b.readVerified()
	if old != s || entries == nil {
		entries = map[string]string{}
	}
	if entries[n.Name] == fp {
		return
	}
	entries[n.Name] = fp
	var sb strings.Builder
	sb.WriteString(s.String() + "\n")
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
	nl, err := b.nlNetfilter()
	if err != nil {
		return false
	}
	now, err := stampOf(nl)
	_ = nl.Close()
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
