package firewall

import (
	"errors"

	"github.com/google/nftables"
)

// An attachment's published ports in nftables: its ADD (AddAttachment) and DEL
// (DelAttachment). What they read of the port maps is in nft_portget.go, how they keep
// the verified record in nft_gen.go.

// AddAttachment: the attachment's reads of the port maps, the network's reads unless the
// verified record holds it, then one batch with the network's fixes (as EnsureNetwork)
// and the key's map elements replaced.
func (b *nftBackend) AddAttachment(n Network, a Attachment) error {
	p, rules, err := planAttachment(n, a)
	if err != nil {
		return err
	}
	c, done, err := b.begin()
	if err != nil {
		return err
	}
	defer done()
	// The record is read before it is replaced: it names the ports of the previous ADD of
	// the same attachment, whose elements may have to go (nft_portget.go).
	scope := portScope{key: a.Key(), full: true}
	return b.opts.recorded("add attachment "+a.Key().String(), func(st State) (func(), error) {
		if rec, known, err := st.attachmentRecord(a.Key()); err == nil {
			scope = scopeFor(a.Key(), rules, rec, known)
		}
		return st.saveAttachment(KindNFTables, n, a)
	}, func() error {
		return b.addAttachment(c, p, a, rules, scope)
	})
}

// addAttachment is AddAttachment's work inside its locked section. The network's reads
// (queueNetwork) are skipped when the verified record says it is in place at the
// generation seen under the lock; after the batch, the record moves to the new generation
// when the batch was the only commit and touched the network only as verified
// (advanceVerified, nft_gen.go).
func (b *nftBackend) addAttachment(c *nftables.Conn, p netPlan, a Attachment, rules []portRule, scope portScope) error {
	t := moorTable()
	before, stamped := stampOn(c)
	verified := stamped && !b.opts.repairing && b.verifiedAt(before, p.Network)
	existing, err := b.readAttachmentPorts(c, t, scope)
	if err != nil {
		return err
	}
	if err := checkPortConflicts(rules, a.Key(), portLabels(existing)); err != nil {
		return err
	}
	if err := b.opts.checkSockets(b.opts.NetNS, rules); err != nil {
		return err
	}
	netQueued := false
	if !verified {
		if netQueued, err = b.queueNetwork(c, t, p); err != nil {
			return err
		}
	}
	// Replace the key's elements that differ from the wanted ones (by label).
	want := map[string]bool{}
	add := map[string][]nftables.SetElement{}
	have := map[string]bool{}
	var stale []portElem
	for _, pe := range existing {
		if pe.label.key() == a.Key() {
			have[pe.label.String()] = true
		}
	}
	for _, r := range rules {
		set, e := portElement(a.Key(), r)
		want[e.Comment] = true
		if !have[e.Comment] {
			add[set] = append(add[set], e)
		}
	}
	for _, pe := range existing {
		if pe.label.key() == a.Key() && !want[pe.label.String()] {
			stale = append(stale, pe)
		}
	}
	if err := b.deleteElements(c, t, stale); err != nil {
		return err
	}
	if err := b.queueElements(c, t, add, false); err != nil {
		return err
	}
	if err := b.flush(c, "add attachment "+a.Key().String()); err != nil {
		return err
	}
	if stamped && !b.opts.repairing && !netQueued {
		committed := len(stale) > 0 || len(add) > 0
		// Not verified before: queueNetwork's reads found it in place (it queued
		// nothing), at the generation before the batch if the batch was the only commit.
		var found *Network
		if !verified {
			found = &p.Network
		}
		b.advanceVerified(c, before, committed, found)
	}
	return nil
}

// DelAttachment: the record is forgotten first (marked deleting: a repair no longer puts
// the rules back), then a read of the key's elements (nft_portget.go) and one batch
// deleting them; the deleting record goes only after the batch committed, so that a DEL
// that failed or died before still finds the elements by key when repeated.
func (b *nftBackend) DelAttachment(network, containerID, ifName string) error {
	return b.delAttachment(AttachmentKey{Network: network, ContainerID: containerID, IfName: ifName}, false)
}

// delAttachmentFull is DelAttachment reading the port maps whole: for GC, which forgets
// the records first and deletes what it found in the kernel.
func (b *nftBackend) delAttachmentFull(key AttachmentKey) error { return b.delAttachment(key, true) }

func (b *nftBackend) delAttachment(key AttachmentKey, full bool) error {
	c, done, err := b.begin()
	if err != nil {
		return err
	}
	defer done()
	before, stamped := stampOn(c)
	// A state that cannot be read or marked does not keep the rules: they are removed
	// (the maps read whole) and the error reported.
	scope := portScope{key: key, full: true}
	var st State
	var serr error
	if !b.opts.repairing {
		st, serr = b.opts.stateHere()
		err := serr
		if err == nil {
			err = st.markDeleting(key)
		}
		if err == nil && !full {
			if rec, known, rerr := st.attachmentRecord(key); rerr == nil {
				scope = scopeFor(key, nil, rec, known)
			}
		}
		serr = err
	}
	t := moorTable()
	existing, err := b.readAttachmentPorts(c, t, scope)
	if err != nil {
		return errors.Join(serr, err)
	}
	var mine []portElem
	for _, pe := range existing {
		if pe.label.key() == key {
			mine = append(mine, pe)
		}
	}
	if len(mine) > 0 {
		if err := b.deleteElements(c, t, mine); err != nil {
			return errors.Join(serr, err)
		}
		if err := b.flush(c, "delete attachment "+key.String()); err != nil {
			return errors.Join(serr, err)
		}
		if stamped && !b.opts.repairing {
			b.advanceVerified(c, before, true, nil)
		}
	}
	if serr != nil || b.opts.repairing {
		return serr
	}
	return st.removeAttachment(key)
}
