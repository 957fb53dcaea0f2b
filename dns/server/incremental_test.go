package server

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/moornet/moor/dns/records"
)

// sameView reports how got differs from want in what queries see: every name form's
// addresses (in order), every PTR, the counts and the record keys.
func sameView(got, want *netView) error {
	if got.records != want.records || got.nameCount != want.nameCount || got.skipped != want.skipped {
		return fmt.Errorf("records/names/skipped %d/%d/%d, rebuild %d/%d/%d", got.records, got.nameCount, got.skipped, want.records, want.nameCount, want.skipped)
	}
	if !slices.Equal(got.keys, want.keys) {
		return fmt.Errorf("record keys differ")
	}
	if !maps.Equal(got.ptr, want.ptr) {
		return fmt.Errorf("ptr %v, rebuild %v", got.ptr, want.ptr)
	}
	if len(got.names) != len(want.names) {
		return fmt.Errorf("%d names, rebuild %d", len(got.names), len(want.names))
	}
	for name, we := range want.names {
		ge := got.names[name]
		if ge == nil {
			return fmt.Errorf("%s missing", name)
		}
		if !slices.Equal(ge.v4, we.v4) || !slices.Equal(ge.v6, we.v6) {
			return fmt.Errorf("%s: %v %v, rebuild %v %v", name, ge.v4, ge.v6, we.v4, we.v6)
		}
	}
	return nil
}

// Random sequences of adds, replacements and deletes over few names and addresses (so that
// they collide often): whenever withRecord takes a record, its view equals buildView of the
// same records; a replacement is never taken. A refused record is applied by a rebuild, as
// the server does.
func TestWithRecordEqualsRebuild(t *testing.T) {
	// The second network's name is not a DNS label: its names have two forms, not three.
	for _, network := range []records.Network{netA, testNet("nolabel-", "127.10.0.1", "127.10.0.0/16")} {
		for seed := range uint64(20) {
			rnd := rand.New(rand.NewPCG(seed, 7))
			held := map[records.RecordKey]records.Record{}
			rebuild := func() *netView {
				v, _ := buildView(network, slices.Collect(maps.Values(held)), DefaultDomain)
				return v
			}
			cur := rebuild()
			taken, refused := 0, 0
			for step := range 200 {
				id := fmt.Sprintf("c%02d", rnd.IntN(30))
				if rnd.IntN(6) == 0 { // a DEL: the server re-reads the network
					delete(held, records.RecordKey{Network: network.Name, ContainerID: id, IfName: "eth0"})
					cur = rebuild()
					continue
				}
				var names, ips []string
				for range 1 + rnd.IntN(3) {
					names = append(names, fmt.Sprintf("n%d", rnd.IntN(200)))
				}
				if rnd.IntN(4) == 0 {
					names = append(names, names[0]+"."+network.Name) // a form of its own first name
				}
				for range 1 + rnd.IntN(2) {
					if rnd.IntN(3) == 0 {
						ips = append(ips, fmt.Sprintf("fd00:10::%x", rnd.IntN(250)))
					} else {
						ips = append(ips, fmt.Sprintf("127.10.0.%d", rnd.IntN(250)))
					}
				}
				r := rec(network.Name, id, ips, names...)
				r.Names = r.Names[:0] // de-duplicated, first kept, as the store does
				for _, n := range names {
					if !slices.Contains(r.Names, n) {
						r.Names = append(r.Names, n)
					}
				}
				_, replaces := held[r.Key()]
				got, ok := cur.withRecord(r)
				held[r.Key()] = r
				want := rebuild()
				if !ok {
					refused++
					cur = want
					continue
				}
				if replaces {
					t.Fatalf("seed %d step %d: a replacement of %s was applied incrementally", seed, step, r.Key())
				}
				if err := sameView(got, want); err != nil {
					t.Fatalf("network %s seed %d step %d, record %v %v: %v", network.Name, seed, step, r.Names, ips, err)
				}
				taken++
				cur = got
			}
			if taken < 20 || refused < 20 {
				t.Fatalf("seed %d: %d records taken, %d refused: the sequence does not test both paths", seed, taken, refused)
			}
		}
	}
}

// At the name bound a record is refused, so that the rebuild leaves it out; below it, it
// is taken.
func TestWithRecordNameBound(t *testing.T) {
	per := records.MaxNamesPerRecord
	var recs []records.Record
	for i := range records.MaxNamesPerNetwork/per - 1 {
		names := make([]string, per)
		for j := range names {
			names[j] = fmt.Sprintf("r%d-n%d", i, j)
		}
		recs = append(recs, rec("a", fmt.Sprintf("id%05d", i), []string{"127.10.0.10"}, names...))
	}
	// Two names are left: a record of three is refused, one of two taken.
	last := make([]string, per-2)
	for j := range last {
		last[j] = "x" + strconv.Itoa(j)
	}
	recs = append(recs, rec("a", "idlast", []string{"127.10.0.11"}, last...))
	v, _ := buildView(netA, slices.Clone(recs), DefaultDomain)
	big := []string{"y0", "y1", "y2"}
	if _, ok := v.withRecord(rec("a", "zz", []string{"127.10.0.12"}, big[:3]...)); ok {
		t.Fatal("a record past the network's name bound was taken")
	}
	fits := rec("a", "zz", []string{"127.10.0.12"}, big[:2]...)
	got, ok := v.withRecord(fits)
	if !ok {
		t.Fatal("a record within the name bound was refused")
	}
	want, _ := buildView(netA, append(recs, fits), DefaultDomain)
	if err := sameView(got, want); err != nil {
		t.Fatal(err)
	}
	if got.nameCount != records.MaxNamesPerNetwork {
		t.Fatalf("nameCount %d", got.nameCount)
	}
}

// A name added through POST /reload with the record's key answers, by reading that record
// alone (the incremental counter moves, the full reload counter does not), and the names
// held before still answer. A replacement, a DEL and a network that gained a gateway take
// the re-read of the network, and the new gateway is listened on.
func TestReloadRecord(t *testing.T) {
	e := newEnv(t, []records.Network{netA}, nil)
	// Another *Local on the same directory: the plugin writes from another process, so the
	// server's in-process watch must not see these writes.
	w, err := records.NewLocal(e.store.Root())
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	put := func(r records.Record) {
		t.Helper()
		if err := w.Put(ctx, r); err != nil {
			t.Fatal(err)
		}
		if err := ReloadRecord(e.sock, r.Key()); err != nil {
			t.Fatal(err)
		}
	}
	wantA := func(gw, name string, want ...string) {
		t.Helper()
		for _, proto := range protos {
			m := e.mustQuery(proto, gw, clientA, name, dns.TypeA)
			if got := answers(m); !slices.Equal(got, want) {
				t.Fatalf("%s %s at %s: %v (rcode %s), want %v", proto, name, gw, got, dns.RcodeToString[m.Rcode], want)
			}
		}
	}
	metric := func(name string) int {
		t.Helper()
		m := regexp.MustCompile(`(?m)^` + name + ` (\d+)$`).FindStringSubmatch(getMetrics(t, e.sock))
		if m == nil {
			t.Fatalf("no %s in /metrics", name)
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	e.put(rec("a", "old", []string{"127.10.0.20"}, "old"))
	reloads, reads := metric("moor_dns_reloads_total"), metric("moor_dns_network_reads_total")

	put(rec("a", "new", []string{"127.10.0.21"}, "new"))
	wantA(gwA, "new", "127.10.0.21")
	wantA(gwA, "old", "127.10.0.20")
	m := e.mustQuery("udp", gwA, clientA, "21.0.10.127.in-addr.arpa", dns.TypePTR)
	if got := answers(m); !slices.Equal(got, []string{"new.dns.moor."}) {
		t.Fatalf("PTR of the new record: %v", got)
	}
	if metric("moor_dns_incremental_updates_total") != 1 || metric("moor_dns_reloads_total") != reloads || metric("moor_dns_network_reads_total") != reads {
		t.Fatal("the record was not applied incrementally")
	}

	// A replacement: the old names of the attachment go.
	put(rec("a", "new", []string{"127.10.0.22"}, "renamed"))
	wantA(gwA, "renamed", "127.10.0.22")
	wantA(gwA, "new")
	if metric("moor_dns_incremental_updates_total") != 1 || metric("moor_dns_network_reads_total") != reads+1 {
		t.Fatal("a replacement was not applied by re-reading the network")
	}
	// A DEL.
	if err := w.Delete(ctx, "a", "new", "eth0"); err != nil {
		t.Fatal(err)
	}
	if err := ReloadRecord(e.sock, records.RecordKey{Network: "a", ContainerID: "new", IfName: "eth0"}); err != nil {
		t.Fatal(err)
	}
	wantA(gwA, "renamed")
	wantA(gwA, "old", "127.10.0.20")

	// The network gains a gateway in the ADD that adds a record: the new gateway answers.
	const gw2 = "127.10.0.2"
	grown := netA
	grown.Gateways = append(slices.Clone(netA.Gateways), net.ParseIP(gw2))
	if err := w.PutNetwork(ctx, grown); err != nil {
		t.Fatal(err)
	}
	put(rec("a", "late", []string{"127.10.0.23"}, "late"))
	wantA(gw2, "late", "127.10.0.23")
	wantA(gw2, "old", "127.10.0.20")

	// A key the store could not hold is refused without reading anything.
	err = ReloadRecord(e.sock, records.RecordKey{Network: "a", ContainerID: "../x", IfName: "eth0"})
	if err == nil || !strings.Contains(err.Error(), "400") {
		t.Fatalf("ReloadRecord with an invalid container ID: %v, want a 400", err)
	}
}
