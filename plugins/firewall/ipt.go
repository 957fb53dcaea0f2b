package firewall

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/moornet/moor/plugins/firewall/iptexec"
)

type iptBackend struct {
	opts   Options
	mu     sync.Mutex
	tables map[family]*iptexec.Runner
}

var _ Backend = (*iptBackend)(nil)

func newIPT(opts Options) (*iptBackend, error) {
	b := &iptBackend{opts: opts, tables: map[family]*iptexec.Runner{}}
	if _, err := b.ipt(fam4); err != nil {
		return nil, &UnavailableError{Backend: KindIPTables, Err: err}
	}
	return b, nil
}

func (b *iptBackend) Name() string { return KindIPTables }

// ipt returns the iptables (fam4) or ip6tables (fam6) runner, found on first use. Each
// command waits up to Options.LockTimeout for the xtables lock.
func (b *iptBackend) ipt(f family) (*iptexec.Runner, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if t := b.tables[f]; t != nil {
		return t, nil
	}
	fam := iptexec.IPv4
	if f == fam6 {
		fam = iptexec.IPv6
	}
	t, err := iptexec.New(fam, b.opts.LockTimeout)
	if err != nil {
		return nil, fmt.Errorf("ip%stables: %w", map[family]string{fam4: "", fam6: "6"}[f], err)
	}
	b.tables[f] = t
	return t, nil
}

// families returns the families this host can serve: IPv4, and IPv6 when ip6tables
// exists. Used where no Network says which families matter (DEL, GC).
func (b *iptBackend) families() []family {
	if _, err := b.ipt(fam6); err != nil {
		return []family{fam4}
	}
	return []family{fam4, fam6}
}

func (b *iptBackend) fail(op string, err error) error {
	return &BackendError{Backend: KindIPTables, Op: op, Err: err}
}

// do runs fn inside Options.NetNS: the iptables processes fn execs inherit the locked
// thread's namespace.
func (b *iptBackend) do(fn func() error) error {
	if b.opts.NetNS == nil {
		return fn()
	}
	return b.opts.NetNS.Do(func(ns.NetNS) error { return fn() })
}

// locked runs fn under the host lock and inside the netns.
func (b *iptBackend) locked(fn func() error) error {
	unlock, err := b.opts.lock()
	if err != nil {
		return err
	}
	defer unlock()
	return b.do(fn)
}

// iptSession applies changes in one family and remembers how to undo the additions.
type iptSession struct {
	b    *iptBackend
	t    *iptexec.Runner
	fam  family
	undo []func() error
	// dumps caches "iptables -t <table> -S" per table for the session (one operation,
	// under the host lock): one exec per table instead of one per chain. Every change
	// this session makes to a table drops its dump.
	dumps map[string]*tableDump
}

// tableDump is one table's listing: its chains and, per chain, its "-A" lines.
type tableDump struct {
	chains map[string]bool
	rules  map[string][]string
}

func (b *iptBackend) session(f family) (*iptSession, error) {
	t, err := b.ipt(f)
	if err != nil {
		return nil, b.fail("find binary", err)
	}
	return &iptSession{b: b, t: t, fam: f, dumps: map[string]*tableDump{}}, nil
}

func (s *iptSession) where(table, chain string) string {
	return fmt.Sprintf("IPv%d %s/%s", s.fam, table, chain)
}

// list returns the chain's moor-labelled rules; exists is false for a missing chain.
func (s *iptSession) list(table, chain string) (lines []iptLine, exists bool, err error) {
	d, err := s.dump(table)
	if err != nil {
		return nil, false, err
	}
	if !d.chains[chain] {
		return nil, false, nil
	}
	lines, err = parseIPTLines(d.rules[chain])
	if err != nil {
		return nil, false, s.b.fail("parse "+s.where(table, chain), err)
	}
	return lines, true, nil
}

// dump lists the whole table once per session (see iptSession.dumps).
func (s *iptSession) dump(table string) (*tableDump, error) {
	if d := s.dumps[table]; d != nil {
		return d, nil
	}
	out, err := s.t.Output("-t", table, "-S")
	if err != nil {
		return nil, s.b.fail(fmt.Sprintf("list IPv%d table %s", s.fam, table), err)
	}
	d := &tableDump{chains: map[string]bool{}, rules: map[string][]string{}}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "-P", "-N":
			d.chains[f[1]] = true
		case appendFlag:
			d.rules[f[1]] = append(d.rules[f[1]], line)
		}
	}
	s.dumps[table] = d
	return d, nil
}

// changed drops the cached listing of table.
func (s *iptSession) changed(table string) { delete(s.dumps, table) }

func (s *iptSession) add(r iptRule) error {
	s.changed(r.table)
	var err error
	if r.insert {
		err = s.t.Run(append([]string{"-t", r.table, "-I", r.chain, "1"}, r.args()...)...)
	} else {
		err = s.t.Run(append([]string{"-t", r.table, appendFlag, r.chain}, r.args()...)...)
	}
	if err != nil {
		return s.b.fail(fmt.Sprintf("add %q to %s", r.label.describe(), s.where(r.table, r.chain)), err)
	}
	s.undo = append(s.undo, func() error { return s.deleteRule(r.table, r.chain, r.args()) })
	return nil
}

// del deletes a listed rule; a rule already gone is not an error.
func (s *iptSession) del(table, chain string, l iptLine) error {
	s.changed(table)
	if err := s.deleteRule(table, chain, l.args); err != nil && !iptexec.IsNotExist(err) {
		return s.b.fail(fmt.Sprintf("delete %q from %s", l.label.describe(), s.where(table, chain)), err)
	}
	return nil
}

// ensureChains creates moor's chains that are missing, and the operator's chain
// IPTUserChain (which nothing else of moor ever changes or deletes).
func (s *iptSession) ensureChains() error {
	for _, c := range append(iptChains[:len(iptChains):len(iptChains)], chainRef{tableFilter, IPTUserChain}) {
		d, err := s.dump(c.table)
		if err != nil {
			return err
		}
		if d.chains[c.chain] {
			continue
		}
		s.changed(c.table)
		if err := s.t.Run("-t", c.table, "-N", c.chain); err != nil {
			return s.b.fail("create "+s.where(c.table, c.chain), err)
		}
		table, chain := c.table, c.chain
		s.undo = append(s.undo, func() error { return s.t.Run("-t", table, "-X", chain) })
	}
	return nil
}

func (s *iptSession) deleteRule(table, chain string, args []string) error {
	return s.t.Run(append([]string{"-t", table, "-D", chain}, args...)...)
}

func (s *iptSession) rollback() {
	for i := len(s.undo) - 1; i >= 0; i-- {
		_ = s.undo[i]() // best effort: the original error is what the caller needs
	}
	s.undo = nil
}

type chainRef struct{ table, chain string }

// groupRules groups rules by chain, keeping the first-seen chain order.
func groupRules(rules []iptRule) ([]chainRef, map[chainRef][]iptRule) {
	var order []chainRef
	groups := map[chainRef][]iptRule{}
	for _, r := range rules {
		ref := chainRef{r.table, r.chain}
		if _, ok := groups[ref]; !ok {
			order = append(order, ref)
		}
		groups[ref] = append(groups[ref], r)
	}
	return order, groups
}

// sync makes every wanted rule present and deletes rules that owned() claims but that
// are not wanted (stale rules of an earlier config), in the chains of want and in every
// moor chain (stale rules may sit where nothing is wanted now). One listing per chain.
func (s *iptSession) sync(want []iptRule, owned func(label) bool) error {
	order, groups := groupRules(want)
	var missing []iptRule
	for _, c := range iptChains {
		ref := chainRef{c.table, c.chain}
		if _, ok := groups[ref]; !ok {
			order = append(order, ref)
			groups[ref] = nil
		}
	}
	for _, ref := range order {
		lines, _, err := s.list(ref.table, ref.chain)
		if err != nil {
			return err
		}
		wanted, have := map[string]bool{}, map[string]bool{}
		for _, r := range groups[ref] {
			wanted[r.label.String()] = true
		}
		for _, l := range lines {
			have[l.label.String()] = true
			if owned(l.label) && !wanted[l.label.String()] {
				if err := s.del(ref.table, ref.chain, l); err != nil {
					return err
				}
			}
		}
		for _, r := range groups[ref] {
			if !have[r.label.String()] {
				missing = append(missing, r)
			}
		}
	}
	// Added together: one iptables-restore per family from bulkThreshold rules on (a
	// network's rules after a firewall reload), which a repair waits for.
	return s.addAll(missing)
}

// each runs fn with a session per family, rolling back every family's additions when
// one fails.
func (b *iptBackend) each(fams []family, fn func(s *iptSession) error) error {
	var done []*iptSession
	for _, f := range fams {
		s, err := b.session(f)
		if err == nil {
			err = fn(s)
		}
		if s != nil {
			done = append(done, s)
		}
		if err != nil {
			for i := len(done) - 1; i >= 0; i-- {
				done[i].rollback()
			}
			return err
		}
	}
	return nil
}

func (b *iptBackend) EnsureNetwork(n Network) error {
	p, err := planNetwork(n)
	if err != nil {
		return err
	}
	return b.locked(func() error {
		return b.opts.recorded("ensure network "+p.Name, func(st State) (func(), error) { return st.saveNetwork(KindIPTables, n) }, func() error {
			if err := claimForIPTables(p.Name); err != nil {
				return err
			}
			return b.each(iptFamilies(p), func(s *iptSession) error { return s.ensureNetwork(p) })
		})
	})
}

// iptFamilies are the families a network's rules go to: those of its subnets, IPv4 for
// a network without any (isolation still applies to it).
func iptFamilies(p netPlan) []family {
	if fs := p.families(); len(fs) > 0 {
		return fs
	}
	return []family{fam4}
}

// ensureNetwork creates moor's chains first (so jump targets exist), then syncs the
// network's rules and the jumps from the built-in chains.
func (s *iptSession) ensureNetwork(p netPlan) error {
	if err := s.ensureChains(); err != nil {
		return err
	}
	if err := s.checkBridgeOwner(p); err != nil {
		return err
	}
	owned := func(l label) bool { return l.Net == p.Name && !l.isAttachment() }
	return s.sync(append(iptNetworkRules(p, s.fam), iptSkeleton()...), owned)
}

func (b *iptBackend) RemoveNetwork(name string) error {
	if err := checkLabelValue("network name", name); err != nil {
		return err
	}
	return b.locked(func() error {
		// A record that cannot be removed does not keep the rules: both are reported.
		ferr := b.opts.forget(func(st State) error { return st.removeNetwork(name) })
		return errors.Join(b.removeNetworkLocked(name), ferr)
	})
}

// removeNetworkLocked is RemoveNetwork's work inside its locked section.
func (b *iptBackend) removeNetworkLocked(name string) error {
	last := true
	err := b.each(b.families(), func(s *iptSession) error {
		more, err := s.removeNetwork(name)
		last = last && !more
		return err
	})
	if err == nil && last {
		err = releaseIPTablesClaim()
	}
	return err
}

// removeNetwork deletes the network's rules and, when no other network is left, moor's
// chains; more tells whether other networks remain.
func (s *iptSession) removeNetwork(name string) (more bool, err error) {
	others := false
	var present []chainRef
	for _, c := range iptChains {
		lines, exists, err := s.list(c.table, c.chain)
		if err != nil {
			return false, err
		}
		if exists {
			present = append(present, chainRef{c.table, c.chain})
		}
		for _, l := range lines {
			switch {
			case l.label.Net == name:
				if err := s.del(c.table, c.chain, l); err != nil {
					return false, err
				}
			case l.label.Net != "":
				others = true
			}
		}
	}
	if others || len(present) == 0 {
		return others, nil
	}
	// Last network out: remove the jumps, then moor's chains.
	for _, r := range iptSkeleton() {
		lines, _, err := s.list(r.table, r.chain)
		if err != nil {
			return false, err
		}
		for _, l := range lines {
			if l.label.Base == r.label.Base {
				if err := s.del(r.table, r.chain, l); err != nil {
					return false, err
				}
			}
		}
	}
	s.changed(tableFilter)
	s.changed(tableNat)
	// A chain gone meanwhile is what flush and delete are for.
	for _, c := range present {
		if err := s.t.Run("-t", c.table, "-F", c.chain); err != nil && !iptexec.IsNotExist(err) {
			return false, s.b.fail("flush "+s.where(c.table, c.chain), err)
		}
	}
	for _, c := range present {
		if err := s.t.Run("-t", c.table, "-X", c.chain); err != nil && !iptexec.IsNotExist(err) {
			return false, s.b.fail("delete "+s.where(c.table, c.chain), err)
		}
	}
	return false, nil
}

// addAll adds rules: one iptables-restore from bulkThreshold rules on, and in a
// Repairer's backend from two on (after a reload every rule of a network is missing,
// and the repair waits for each exec; one restore makes it a single one).
func (s *iptSession) addAll(rules []iptRule) error {
	if len(rules) >= bulkThreshold || (s.b.opts.repairing && len(rules) > 1) {
		return s.addBulk(rules)
	}
	for _, r := range rules {
		if err := s.add(r); err != nil {
			return err
		}
	}
	return nil
}

// iptRuleRef is a listed rule with its place.
type iptRuleRef struct {
	table, chain string
	line         iptLine
}

// attachmentRules lists the rules attachments own (DNAT and forward ACCEPT) and the
// labels of the DNAT rules, for conflict checks. Missing chains are empty.
func (s *iptSession) attachmentRules() ([]iptRuleRef, []label, error) {
	var refs []iptRuleRef
	var labels []label
	for _, c := range []chainRef{{tableNat, iptHostports}, {tableFilter, iptForward}} {
		lines, _, err := s.list(c.table, c.chain)
		if err != nil {
			return nil, nil, err
		}
		for _, l := range lines {
			if !l.label.isAttachment() {
				continue
			}
			refs = append(refs, iptRuleRef{table: c.table, chain: c.chain, line: l})
			labels = append(labels, l.label)
		}
	}
	return refs, labels, nil
}

// missing lists the labels of want that the chains do not hold.
func (s *iptSession) missing(want []iptRule) ([]string, error) {
	order, groups := groupRules(want)
	var out []string
	for _, ref := range order {
		lines, exists, err := s.list(ref.table, ref.chain)
		if err != nil {
			return nil, err
		}
		if !exists {
			out = append(out, "chain "+s.where(ref.table, ref.chain))
			continue
		}
		have := map[string]bool{}
		for _, l := range lines {
			have[l.label.String()] = true
		}
		var labels []label
		for _, r := range groups[ref] {
			labels = append(labels, r.label)
		}
		for _, m := range labelsMissing(labels, have) {
			out = append(out, fmt.Sprintf("IPv%d %s", s.fam, m))
		}
	}
	return out, nil
}

func (b *iptBackend) check(object string, fams []family, want func(f family) []iptRule) error {
	var missing []string
	err := b.do(func() error {
		return b.each(fams, func(s *iptSession) error {
			m, err := s.missing(want(s.fam))
			missing = append(missing, m...)
			return err
		})
	})
	if err != nil {
		return err
	}
	if len(missing) > 0 {
		return &MissingRulesError{Backend: KindIPTables, Object: object, Missing: missing}
	}
	return nil
}

func (b *iptBackend) CheckNetwork(n Network) error {
	p, err := planNetwork(n)
	if err != nil {
		return err
	}
	return b.check("network "+p.Name, iptFamilies(p), func(f family) []iptRule {
		return append(iptSkeleton(), iptNetworkRules(p, f)...)
	})
}

func (b *iptBackend) CheckAttachment(n Network, a Attachment) error {
	p, rules, err := planAttachment(n, a)
	if err != nil {
		return err
	}
	return b.check("attachment "+a.Key().String(), iptFamilies(p), func(f family) []iptRule {
		return iptPortRules(p, a.Key(), rules, f)
	})
}

// Status: the iptables binary runs and reaches the nat table in the namespace.
func (b *iptBackend) Status() error {
	t, err := b.ipt(fam4)
	if err != nil {
		return &UnavailableError{Backend: KindIPTables, Err: err}
	}
	err = b.do(func() error {
		_, err := t.Output("-t", tableNat, "-S")
		return err
	})
	if err != nil {
		return &UnavailableError{Backend: KindIPTables, Err: err}
	}
	return nil
}
