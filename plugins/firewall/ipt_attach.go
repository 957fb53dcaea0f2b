package firewall

import (
	"errors"
	"fmt"
	"strings"
)

// The iptables backend's attachment operations (published ports) and its fingerprint.

func (b *iptBackend) AddAttachment(n Network, a Attachment) error {
	p, rules, err := planAttachment(n, a)
	if err != nil {
		return err
	}
	return b.locked(func() error {
		return b.opts.recorded("add attachment "+a.Key().String(), func(st State) (func(), error) { return st.saveAttachment(KindIPTables, n, a) }, func() error {
			return b.addAttachment(p, a, rules)
		})
	})
}

// addAttachment is AddAttachment's work inside its locked section.
func (b *iptBackend) addAttachment(p netPlan, a Attachment, rules []portRule) error {
	key := a.Key()
	if err := claimForIPTables(p.Name); err != nil {
		return err
	}
	// First pass: read every family, refuse conflicts before changing anything.
	fams := iptFamilies(p)
	sessions := map[family]*iptSession{}
	old := map[family][]iptRuleRef{}
	for _, f := range fams {
		s, err := b.session(f)
		if err != nil {
			return err
		}
		sessions[f] = s
		refs, labels, err := s.attachmentRules()
		if err != nil {
			return err
		}
		if err := checkPortConflicts(rules, key, labels); err != nil {
			return err
		}
		for _, r := range refs {
			if r.line.label.key() == key {
				old[f] = append(old[f], r)
			}
		}
	}
	if err := b.opts.checkSockets(nil, rules); err != nil { // already inside the netns
		return err
	}
	// Second pass: ensure the network and add the new rules in every family (undone
	// together on failure), then delete the old ones.
	for _, f := range fams {
		s := sessions[f]
		err := s.ensureNetwork(p)
		if err == nil {
			err = s.addAll(iptPortRules(p, key, rules, f))
		}
		if err != nil {
			for _, s := range sessions {
				s.rollback()
			}
			return err
		}
	}
	for _, f := range fams {
		if err := sessions[f].delAll(old[f]); err != nil {
			return err
		}
	}
	return nil
}

func (b *iptBackend) DelAttachment(network, containerID, ifName string) error {
	key := AttachmentKey{Network: network, ContainerID: containerID, IfName: ifName}
	return b.locked(func() error {
		ferr := b.opts.forget(func(st State) error { return st.removeAttachment(key) })
		return errors.Join(ferr, b.each(b.families(), func(s *iptSession) error {
			refs, _, err := s.attachmentRules()
			if err != nil {
				return err
			}
			var mine []iptRuleRef
			for _, r := range refs {
				if r.line.label.key() == key {
					mine = append(mine, r)
				}
			}
			return s.delAll(mine)
		}))
	})
}

func (b *iptBackend) Attachments(network string) ([]AttachmentKey, error) {
	var labels []label
	err := b.do(func() error {
		return b.each(b.families(), func(s *iptSession) error {
			_, l, err := s.attachmentRules()
			labels = append(labels, l...)
			return err
		})
	})
	return attachmentKeys(network, labels), err
}

// fingerprint is the whole of the filter and nat tables in every family, one listing per
// table: the Repairer's backstop compares it with the last one that was in order, so that
// a check with nothing changed costs a few execs whatever the number of networks.
func (b *iptBackend) fingerprint() (string, error) {
	var sb strings.Builder
	err := b.do(func() error {
		return b.each(b.families(), func(s *iptSession) error {
			for _, table := range []string{tableFilter, tableNat} {
				d, err := s.dump(table)
				if err != nil {
					return err
				}
				fmt.Fprintf(&sb, "%d %s %v %v\n", s.fam, table, d.chains, d.rules)
			}
			return nil
		})
	})
	return sb.String(), err
}
