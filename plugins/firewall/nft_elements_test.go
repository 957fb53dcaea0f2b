package firewall

import (
	"testing"
)

// generation is nf_tables' ruleset generation in b's netns: every commit moves it.
func generation(t *testing.T, b *nftBackend) uint32 {
	t.Helper()
	return stampNow(t, b).gen
}

// stampNow is the netns cookie and ruleset generation read through an operation's
// connection.
func stampNow(t *testing.T, b *nftBackend) genStamp {
	t.Helper()
	c, done, err := b.conn()
	must(t, "conn", err)
	defer done()
	s, ok := stampOn(c)
	if !ok {
		t.Fatal("reading the ruleset generation failed")
	}
	return s
}

// An ADD to a network that is in place commits nothing; one whose gateway element was
// deleted by hand puts it back.
func TestEnsureNetworkInPlaceCommitsNothing(t *testing.T) {
	l := newLab(t, KindNFTables)
	n := l.addNetwork("inplace", nil)
	b := l.fw.(*nftBackend)
	before := generation(t, b)
	must(t, "EnsureNetwork", l.fw.EnsureNetwork(n.Network))
	if after := generation(t, b); after != before {
		t.Errorf("EnsureNetwork of a network in place committed (generation %d -> %d)", before, after)
	}
	p, err := planNetwork(n.Network)
	must(t, "plan", err)
	gws := gatewaySets(moorTable())
	c, done, err := b.conn()
	must(t, "conn", err)
	must(t, "delete gateway", c.SetDeleteElements(gws[fam4], gatewayElements(p)[fam4]))
	must(t, "flush", c.Flush())
	done()
	must(t, "EnsureNetwork", l.fw.EnsureNetwork(n.Network))
	c, done, err = b.conn()
	must(t, "conn", err)
	defer done()
	have, err := b.readElements(c, gws[fam4])
	must(t, "read gateways", err)
	if len(have) != len(gatewayElements(p)[fam4]) || len(have) == 0 {
		t.Errorf("gateway elements after repair: %d, want %d", len(have), len(gatewayElements(p)[fam4]))
	}
}
