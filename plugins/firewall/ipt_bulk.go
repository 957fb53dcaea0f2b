package firewall

import (
	"fmt"
	"strings"
)

// Bulk changes of the iptables backend: from bulkThreshold rules on, the rules of one
// attachment are added or deleted by one iptables-restore --noflush call per family
// (each table's lines commit together) instead of one iptables call per rule: 1,000
// port mappings are about 4,000 rules, minutes one by one. Smaller changes keep the
// per-rule path, which needs no second binary.

const bulkThreshold = 16

// restoreOp is one line of iptables-restore input.
type restoreOp struct {
	table, chain string
	flag         string // "-A", "-I" or "-D"
	args         []string
}

// restore applies ops in one iptables-restore call; table by table, all or nothing.
func (s *iptSession) restore(what string, ops []restoreOp) error {
	s.changed(tableNat)
	s.changed(tableFilter)
	var in strings.Builder
	for _, table := range []string{tableNat, tableFilter} {
		started := false
		for _, op := range ops {
			if op.table != table {
				continue
			}
			if !started {
				in.WriteString("*" + table + "\n")
				started = true
			}
			in.WriteString(op.flag + " " + op.chain)
			for _, a := range op.args {
				in.WriteString(" " + restoreQuote(a))
			}
			in.WriteString("\n")
		}
		if started {
			in.WriteString("COMMIT\n")
		}
	}
	if err := s.t.Restore(in.String()); err != nil {
		return s.b.fail(what, err)
	}
	return nil
}

// restoreQuote quotes an argument that holds a space (labels do; they hold no quote or
// backslash, see checkLabelValue).
func restoreQuote(a string) string {
	if strings.ContainsAny(a, " \t") {
		return `"` + a + `"`
	}
	return a
}

// addBulk adds rules with one restore call and registers their deletion as the undo.
func (s *iptSession) addBulk(rules []iptRule) error {
	add := make([]restoreOp, 0, len(rules))
	del := make([]restoreOp, 0, len(rules))
	for _, r := range rules {
		flag := "-A"
		if r.insert {
			flag = "-I"
		}
		add = append(add, restoreOp{table: r.table, chain: r.chain, flag: flag, args: r.args()})
		del = append(del, restoreOp{table: r.table, chain: r.chain, flag: "-D", args: r.args()})
	}
	if err := s.restore(fmt.Sprintf("add %d rules (IPv%d)", len(rules), s.fam), add); err != nil {
		return err
	}
	s.undo = append(s.undo, func() error { return s.restore("undo bulk add", del) })
	return nil
}

// delAll deletes listed rules: one restore call from bulkThreshold on, else one by one.
func (s *iptSession) delAll(refs []iptRuleRef) error {
	if len(refs) < bulkThreshold {
		for _, r := range refs {
			if err := s.del(r.table, r.chain, r.line); err != nil {
				return err
			}
		}
		return nil
	}
	ops := make([]restoreOp, 0, len(refs))
	for _, r := range refs {
		ops = append(ops, restoreOp{table: r.table, chain: r.chain, flag: "-D", args: r.line.args})
	}
	return s.restore(fmt.Sprintf("delete %d rules (IPv%d)", len(refs), s.fam), ops)
}
