package firewall

import "github.com/google/nftables"

// The network's set elements: its bridge in fwdmap, natmap and bridges, its gateways in
// the DNS gateway sets (the DNS guard rules keep other networks' queries off them).

// ownsBridge reports whether fwdmap's elements map p's bridge to p's network (the
// bridge's three set elements go in one batch, so fwdmap speaks for the other two).
func ownsBridge(fwd []nftables.SetElement, p netPlan) bool {
	for _, e := range fwd {
		if bridgeName(e.Key) == p.Bridge && elementNetwork(e) == p.Name {
			return true
		}
	}
	return false
}

// queueMissingGateways reads the gateway sets and queues the elements of p that are not
// there (usually none: nothing is queued then).
func (b *nftBackend) queueMissingGateways(c *nftables.Conn, t *nftables.Table, p netPlan) (queued bool, err error) {
	gwSets := gatewaySets(t)
	for f, elems := range gatewayElements(p) {
		have, err := b.readElements(c, gwSets[f])
		if err != nil {
			return false, err
		}
		present := map[string]bool{}
		for _, e := range have {
			if elementNetwork(e) == p.Name {
				present[string(e.Key)] = true
			}
		}
		var missing []nftables.SetElement
		for _, e := range elems {
			if !present[string(e.Key)] {
				missing = append(missing, e)
			}
		}
		if len(missing) > 0 {
			if err := c.SetAddElements(gwSets[f], missing); err != nil {
				return false, b.fail("queue element of "+gwSets[f].Name, err)
			}
			queued = true
		}
	}
	return queued, nil
}

// queueStaleGateways queues the deletion of the network's gateway elements that p does
// not have.
func (b *nftBackend) queueStaleGateways(c *nftables.Conn, t *nftables.Table, p netPlan) error {
	wanted := map[string]bool{}
	for _, gws := range p.gateways {
		for _, gw := range gws {
			wanted[string(gw)] = true
		}
	}
	for _, s := range gatewaySets(t) {
		elems, err := b.readElements(c, s)
		if err != nil {
			return err
		}
		var del []nftables.SetElement
		for _, e := range elems {
			if elementNetwork(e) == p.Name && !wanted[string(e.Key)] {
				del = append(del, e)
			}
		}
		if len(del) > 0 {
			if err := c.SetDeleteElements(s, del); err != nil {
				return b.fail("queue element deletion of "+s.Name, err)
			}
		}
	}
	return nil
}
