package firewall

import (
	"errors"
	"fmt"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// probeTableName is created and deleted in one batch by Status; nothing persists.
const probeTableName = "moor-probe"

type nftBackend struct {
	opts Options
	// probe is the last reading of the verified record (nft_gen.go), for the next
	// EnsureNetwork only.
	probe *verifiedProbe
	// wholePortReads counts readPorts calls: an attachment's ADD and DEL read the port
	// maps whole only when its record cannot be trusted (nft_portget.go); tests check it.
	wholePortReads int
	// networkReads counts queueNetwork calls (reads of a network's chains and sets).
	networkReads int
}

var _ Backend = (*nftBackend)(nil)

func newNFT(opts Options) *nftBackend { return &nftBackend{opts: opts} }

func (b *nftBackend) Name() string { return KindNFTables }

func (b *nftBackend) fail(op string, err error) error {
	return &BackendError{Backend: KindNFTables, Op: op, Err: err}
}

// isNotFound tells a missing table, chain or set apart from other failures. The library
// flattens netlink errors of reads into strings, hence the text comparison.
func isNotFound(err error) bool {
	return errors.Is(err, unix.ENOENT) || strings.Contains(err.Error(), unix.ENOENT.Error())
}

// labelledRule is a rule read from the kernel with its parsed label.
type labelledRule struct {
	rule  *nftables.Rule
	label label
}

// readRules lists a chain's moor-labelled rules; a missing table or chain is empty.
func (b *nftBackend) readRules(c *nftables.Conn, t *nftables.Table, chain string) ([]labelledRule, error) {
	rules, err := c.GetRules(t, &nftables.Chain{Name: chain, Table: t})
	if err != nil {
		if isNotFound(err) {
			return nil, nil
		}
		return nil, b.fail("list chain "+chain, err)
	}
	var out []labelledRule
	for _, r := range rules {
		if l, ok := ruleLabel(r); ok {
			out = append(out, labelledRule{rule: r, label: l})
		}
	}
	return out, nil
}

// readState lists the chains of moor's table (one dump of the family's chains) and the
// labels of the rules in the named ones (one dump of the table's rules, decoding labels
// only: see readLabels).
func (b *nftBackend) readState(c *nftables.Conn, t *nftables.Table, read ...string) (nftState, error) {
	st := nftState{chains: map[string]bool{}, labels: map[string][]label{}}
	chains, err := c.ListChainsOfTableFamily(t.Family)
	if err != nil && !isNotFound(err) {
		return st, b.fail("list chains", err)
	}
	for _, ch := range chains {
		if ch.Table != nil && ch.Table.Name == t.Name {
			st.chains[ch.Name] = true
		}
		if ch.Table != nil && ch.Table.Name == iptMarkerTable {
			st.iptMarker = true
		}
		if ch.Table != nil && ch.Table.Name == UserTable && ch.Name == UserChain {
			st.userChain = true
		}
	}
	want := map[string]bool{}
	for _, name := range read {
		if st.chains[name] {
			want[name] = true
			st.labels[name] = []label{}
		}
	}
	if len(want) == 0 {
		return st, nil
	}
	rules, err := b.readLabels(c, t, "", "")
	if err != nil {
		return st, err
	}
	for _, r := range rules {
		if want[r.chain] {
			st.labels[r.chain] = append(st.labels[r.chain], r.label)
		}
	}
	return st, nil
}

func baseChainNames() []string {
	names := make([]string, 0, len(nftBaseChains))
	for _, bc := range nftBaseChains {
		names = append(names, bc.name)
	}
	return names
}

// tableExists tells whether moor's table is there.
func (b *nftBackend) tableExists(c *nftables.Conn, t *nftables.Table) (bool, error) {
	tables, err := c.ListTablesOfFamily(t.Family)
	if err != nil {
		return false, b.fail("list tables", err)
	}
	for _, x := range tables {
		if x.Name == t.Name {
			return true, nil
		}
	}
	return false, nil
}

// readElements lists a set's elements with their labels; a missing set is empty.
func (b *nftBackend) readElements(c *nftables.Conn, s *nftables.Set) ([]nftables.SetElement, error) {
	elems, err := c.GetSetElements(s)
	if err != nil {
		if isNotFound(err) {
			return nil, nil
		}
		return nil, b.fail("list set "+s.Name, err)
	}
	return elems, nil
}

func elementNetwork(e nftables.SetElement) string {
	l, ok := parseLabel(e.Comment)
	if !ok {
		return ""
	}
	return l.Net
}

func (b *nftBackend) flush(c *nftables.Conn, op string) error {
	if err := c.Flush(); err != nil {
		return b.fail(op, err)
	}
	return nil
}

// EnsureNetwork: nothing when the verified record says the network is in place at the
// ruleset's current generation (nft_gen.go); else one read of fwdmap and the chains, one
// batch (see queueNetwork), and a new record when that committed nothing.
func (b *nftBackend) EnsureNetwork(n Network) error {
	p, err := planNetwork(n)
	if err != nil {
		return err
	}
	if !b.opts.repairing && b.inPlace(n) {
		return nil
	}
	c, done, err := b.begin()
	if err != nil {
		return err
	}
	defer done()
	return b.opts.recorded("ensure network "+p.Name, func(st State) (func(), error) { return st.saveNetwork(KindNFTables, n) }, func() error {
		before, stamped := stampOn(c)
		if _, err := b.queueNetwork(c, moorTable(), p); err != nil {
			return err
		}
		if err := b.flush(c, "ensure network "+p.Name); err != nil {
			return err
		}
		if after, ok := stampOn(c); stamped && ok && after == before && !b.opts.repairing {
			b.writeVerified(after, n) // verified in place, and nothing committed meanwhile
		}
		return nil
	})
}

// queueNetwork reads fwdmap (bridge ownership, stale elements of an earlier bridge name)
// and queues the skeleton, the network's chains flushed and refilled, and the bridge's
// and gateways' set elements. It refuses a bridge of another network, a move to another
// bridge while the old one has ports, and a host whose networks use iptables.
func (b *nftBackend) queueNetwork(c *nftables.Conn, t *nftables.Table, p netPlan) (queued bool, err error) {
	b.networkReads++
	fwdSet, natSet, brSet := nftSets(t)
	elems, err := b.readElements(c, fwdSet)
	if err != nil {
		return false, err
	}
	var stale []nftables.SetElement
	for _, e := range elems {
		owner, br := elementNetwork(e), bridgeName(e.Key)
		switch {
		case br == p.Bridge && owner != p.Name:
			return false, invalid("bridge", p.Bridge, fmt.Sprintf("already used by moor network %q", owner))
		case br != p.Bridge && owner == p.Name:
			if err := checkBridgeMove(b.opts.NetNS, p, br); err != nil {
				return false, err
			}
			stale = append(stale, e)
		}
	}
	netChains := []string{fwdChainName(p.Name), natChainName(p.Name)}
	st, err := b.readState(c, t, append(baseChainNames(), append(netChains, chainHostports)...)...)
	if err != nil {
		return false, err
	}
	if st.iptMarker {
		return false, &MixedBackendsError{Network: p.Name, Want: KindNFTables, InUse: KindIPTables}
	}
	want := nftNetworkRules(p)
	if len(stale) == 0 && st.userChain && ownsBridge(elems, p) && skeletonInPlace(st) && !chainsDiffer(st, netChains, want) {
		// The usual ADD: the network is in place. Queue nothing (no commit) unless a
		// gateway element is missing.
		return b.queueMissingGateways(c, t, p)
	}
	if err := queueSkeleton(c, t, st); err != nil {
		return false, b.fail("queue skeleton", err)
	}
	queueUserChain(c, st)
	if chainsDiffer(st, netChains, want) {
		// New or changed network: drop gateway elements it no longer has.
		if err := b.queueStaleGateways(c, t, p); err != nil {
			return false, err
		}
	}
	queueChains(c, t, st, netChains, want)
	sets := []*nftables.Set{fwdSet, natSet, brSet}
	for _, e := range stale {
		// Add before delete: the batch then succeeds whether or not each set still
		// holds the element.
		oldFwd, oldNat, oldBr := bridgeElements(p.Name, bridgeName(e.Key))
		if err := b.replaceElements(c, sets, []nftables.SetElement{oldFwd, oldNat, oldBr}, true); err != nil {
			return false, err
		}
	}
	fwdElem, natElem, brElem := bridgeElements(p.Name, p.Bridge)
	if err := b.replaceElements(c, sets, []nftables.SetElement{fwdElem, natElem, brElem}, false); err != nil {
		return false, err
	}
	gwSets := gatewaySets(t)
	for f, elems := range gatewayElements(p) {
		// Adding an element that exists is a no-op: no read needed on the hot path.
		if err := c.SetAddElements(gwSets[f], elems); err != nil {
			return false, b.fail("queue element of "+gwSets[f].Name, err)
		}
	}
	return true, nil
}

// replaceElements queues adding elems[i] to sets[i] and, when del, deleting it again.
func (b *nftBackend) replaceElements(c *nftables.Conn, sets []*nftables.Set, elems []nftables.SetElement, del bool) error {
	for i, s := range sets {
		if err := c.SetAddElements(s, []nftables.SetElement{elems[i]}); err != nil {
			return b.fail("queue element of "+s.Name, err)
		}
		if !del {
			continue
		}
		if err := c.SetDeleteElements(s, []nftables.SetElement{elems[i]}); err != nil {
			return b.fail("queue element deletion of "+s.Name, err)
		}
	}
	return nil
}

// RemoveNetwork: one batch deleting the network's set elements, DNAT rules and chains,
// or the whole table when no other network is left.
func (b *nftBackend) RemoveNetwork(name string) (err error) {
	if err := checkLabelValue("network name", name); err != nil {
		return err
	}
	c, done, err := b.begin()
	if err != nil {
		return err
	}
	defer done()
	// A record that cannot be removed does not keep the rules: both are reported.
	ferr := b.opts.forget(func(st State) error { return st.removeNetwork(name) })
	defer func() { err = errors.Join(err, ferr) }()
	t := moorTable()
	if exists, err := b.tableExists(c, t); err != nil || !exists {
		return err
	}
	ports, err := b.readPorts(c, t)
	if err != nil {
		return err
	}
	others := false
	var mine []portElem
	for _, p := range ports {
		if p.label.Net != name {
			others = true
		} else {
			mine = append(mine, p)
		}
	}
	sets := []*nftables.Set{}
	fwdSet, natSet, brSet := nftSets(t)
	gwSets := gatewaySets(t)
	setElems := map[*nftables.Set][]nftables.SetElement{}
	for _, s := range []*nftables.Set{fwdSet, natSet, brSet, gwSets[fam4], gwSets[fam6]} {
		elems, err := b.readElements(c, s)
		if err != nil {
			return err
		}
		for _, e := range elems {
			if elementNetwork(e) == name {
				setElems[s] = append(setElems[s], e)
			} else {
				others = true
			}
		}
		sets = append(sets, s)
	}
	if !others {
		c.DelTable(t)
		return b.flush(c, "remove table "+nftTableName)
	}
	for _, s := range sets {
		if len(setElems[s]) == 0 {
			continue
		}
		if err := c.SetDeleteElements(s, setElems[s]); err != nil {
			return b.fail("queue element deletion of "+s.Name, err)
		}
	}
	if err := b.deleteElements(c, t, mine); err != nil {
		return err
	}
	for _, chain := range []string{fwdChainName(name), natChainName(name)} {
		ch := c.AddChain(&nftables.Chain{Name: chain, Table: t}) // so that deleting never fails on absence
		c.FlushChain(ch)
		c.DelChain(ch)
	}
	return b.flush(c, "remove network "+name)
}

func (b *nftBackend) Attachments(network string) ([]AttachmentKey, error) {
	c, done, err := b.conn()
	if err != nil {
		return nil, err
	}
	defer done()
	existing, err := b.readPorts(c, moorTable())
	if err != nil {
		return nil, err
	}
	return attachmentKeys(network, portLabels(existing)), nil
}

// haveLabels reads the labels present in the given chains.
func (b *nftBackend) haveLabels(c *nftables.Conn, t *nftables.Table, chains ...string) (map[string]bool, error) {
	have := map[string]bool{}
	for _, ch := range chains {
		rules, err := b.readRules(c, t, ch)
		if err != nil {
			return nil, err
		}
		for _, r := range rules {
			have[r.label.String()] = true
		}
	}
	return have, nil
}

func (b *nftBackend) CheckNetwork(n Network) error {
	p, err := planNetwork(n)
	if err != nil {
		return err
	}
	c, done, err := b.conn()
	if err != nil {
		return err
	}
	defer done()
	t := moorTable()
	chains := []string{fwdChainName(p.Name), natChainName(p.Name), chainHostports}
	for _, bc := range nftBaseChains {
		chains = append(chains, bc.name)
	}
	have, err := b.haveLabels(c, t, chains...)
	if err != nil {
		return err
	}
	var want []label
	for _, r := range append(append(nftBaseRules(), hostportsRules()...), nftNetworkRules(p)...) {
		want = append(want, r.label)
	}
	missing := labelsMissing(want, have)
	fwdSet, natSet, brSet := nftSets(t)
	for _, s := range []*nftables.Set{fwdSet, natSet, brSet} {
		elems, err := b.readElements(c, s)
		if err != nil {
			return err
		}
		if !hasElement(elems, p.Name, p.Bridge) {
			missing = append(missing, fmt.Sprintf("element %s of set %s", p.Bridge, s.Name))
		}
	}
	if len(missing) > 0 {
		return &MissingRulesError{Backend: KindNFTables, Object: "network " + p.Name, Missing: missing}
	}
	return nil
}

func hasElement(elems []nftables.SetElement, network, bridge string) bool {
	for _, e := range elems {
		if bridgeName(e.Key) == bridge && elementNetwork(e) == network {
			return true
		}
	}
	return false
}

func (b *nftBackend) CheckAttachment(n Network, a Attachment) error {
	if _, _, err := planAttachment(n, a); err != nil {
		return err
	}
	have, err := b.portLabelSet()
	if err != nil {
		return err
	}
	return checkAttachmentIn(have, n, a)
}

// missingAttachments is CheckAttachment for many attachments on one read of the port
// maps (the Repairer's check: one read per check instead of one per attachment).
func (b *nftBackend) missingAttachments(nets []StoredNetwork) (map[AttachmentKey]bool, error) {
	have, err := b.portLabelSet()
	if err != nil {
		return nil, err
	}
	out := map[AttachmentKey]bool{}
	for _, sn := range nets {
		for _, a := range sn.Attachments {
			if checkAttachmentIn(have, sn.Network, a) != nil {
				out[a.Key()] = true
			}
		}
	}
	return out, nil
}

// portLabelSet reads the labels of every port-map element.
func (b *nftBackend) portLabelSet() (map[string]bool, error) {
	c, done, err := b.conn()
	if err != nil {
		return nil, err
	}
	defer done()
	existing, err := b.readPorts(c, moorTable())
	if err != nil {
		return nil, err
	}
	have := make(map[string]bool, len(existing))
	for _, l := range portLabels(existing) {
		have[l.String()] = true
	}
	return have, nil
}

// checkAttachmentIn reports which of a's elements have no element of the same label
// among have.
func checkAttachmentIn(have map[string]bool, n Network, a Attachment) error {
	_, rules, err := planAttachment(n, a)
	if err != nil {
		return err
	}
	var want []label
	for _, r := range rules {
		_, e := portElement(a.Key(), r)
		l, _ := parseLabel(e.Comment)
		want = append(want, l)
	}
	if missing := labelsMissing(want, have); len(missing) > 0 {
		return &MissingRulesError{Backend: KindNFTables, Object: "attachment " + a.Key().String(), Missing: missing}
	}
	return nil
}

// inUse reports which backend moor's inet tables say is in use here: KindNFTables
// (table "moor"), KindIPTables (the iptables backend's marker) or "" (none): one read,
// where Status commits a probe table with NAT chains and deletes it again (a commit that
// deletes makes the kernel wait for an RCU grace period, milliseconds on every ADD if
// detection always probed).
func (b *nftBackend) inUse() string {
	c, done, err := b.conn()
	if err != nil {
		return ""
	}
	defer done()
	tables := inetTables(c)
	switch {
	case tables[nftTableName]:
		return KindNFTables
	case tables[iptMarkerTable]:
		return KindIPTables
	}
	return ""
}

// Status creates, in one batch, a throw-away table with a NAT chain holding every kind
// of expression moor uses, and deletes it again: the kernel loads what it needs or
// refuses, and nothing persists.
func (b *nftBackend) Status() error {
	c, done, err := b.conn()
	if err != nil {
		return &UnavailableError{Backend: KindNFTables, Err: err}
	}
	defer done()
	t := &nftables.Table{Name: probeTableName, Family: nftables.TableFamilyINet}
	c.AddTable(t)
	ch := c.AddChain(&nftables.Chain{Name: chainPostrouting, Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
	pre := c.AddChain(&nftables.Chain{Name: chainPrerouting, Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest})
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: join(nfproto(fam4), ctDNAT(), ctNotEstablished(),
		addr(fam4, true, loopback4, expr.CmpOpEq), one(&expr.Masq{}))})
	c.AddRule(&nftables.Rule{Table: t, Chain: pre, Exprs: join(fibLocal(), nfproto(fam6),
		l4dport(unix.IPPROTO_TCP, minPort), dnatTo(fam6, loopback4.IP.To16(), minPort))})
	maps := portMaps(t)
	for _, name := range portMapNames {
		if err := c.AddSet(maps[name], nil); err != nil {
			return &UnavailableError{Backend: KindNFTables, Err: err}
		}
	}
	for _, r := range hostportsRules() { // concatenated map lookups feeding DNAT
		c.AddRule(&nftables.Rule{Table: t, Chain: pre, Exprs: r.exprs})
	}
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return &UnavailableError{Backend: KindNFTables, Err: err}
	}
	return nil
}
