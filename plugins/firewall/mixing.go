package firewall

import (
	"github.com/google/nftables"
)

// One backend per host. The nftables backend's rules cannot name the iptables backend's
// bridges and the other way round, so networks of the two backends on one host would not
// be isolated from each other. Instead of isolating across backends, a network is
// refused (*MixedBackendsError, code 7) when the host's moor networks use the other
// backend. The nftables backend is in use while its table "inet moor" exists; the
// iptables backend keeps an empty table "inet moor-iptables" (with one chain) while it
// has networks, so each backend sees the other with one netlink read it does anyway
// (nftables: the chain list it reads on every change; iptables: one table list). A
// kernel without nf_tables cannot run the nftables backend, so the iptables backend
// then keeps no marker. Detection (KindDetect) follows the backend in use.

func iptMarker() *nftables.Table {
	return &nftables.Table{Name: iptMarkerTable, Family: nftables.TableFamilyINet}
}

// inetTables lists the names of the inet tables in the calling thread's netns (nil when
// nf_tables is not available).
func inetTables(c *nftables.Conn) map[string]bool {
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil
	}
	out := map[string]bool{}
	for _, t := range tables {
		out[t.Name] = true
	}
	return out
}

// claimForIPTables refuses network when the nftables backend is in use and otherwise
// makes sure the iptables marker exists. It runs inside the host netns.
func claimForIPTables(network string) error {
	c, err := nftables.New()
	if err != nil {
		return nil // no nf_tables: the nftables backend cannot be in use
	}
	tables := inetTables(c)
	switch {
	case tables == nil || tables[iptMarkerTable]:
		return nil
	case tables[nftTableName]:
		return &MixedBackendsError{Network: network, Want: KindIPTables, InUse: KindNFTables}
	}
	c.AddTable(iptMarker())
	c.AddChain(&nftables.Chain{Name: iptMarkerChain, Table: iptMarker()})
	if err := c.Flush(); err != nil {
		return &BackendError{Backend: KindIPTables, Op: "create marker table inet " + iptMarkerTable, Err: err}
	}
	return nil
}

// releaseIPTablesClaim deletes the marker when the iptables backend's last network is
// gone. It runs inside the host netns.
func releaseIPTablesClaim() error {
	c, err := nftables.New()
	if err != nil {
		return nil
	}
	if !inetTables(c)[iptMarkerTable] {
		return nil
	}
	c.DelTable(iptMarker())
	if err := c.Flush(); err != nil && !isNotFound(err) {
		return &BackendError{Backend: KindIPTables, Op: "delete marker table inet " + iptMarkerTable, Err: err}
	}
	return nil
}
