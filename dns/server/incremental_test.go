package server

import (
	"cmp"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/moornet/moor/dns/records"
)

// sameView reports how got differs from want in what queries see: every name form's
// addresses (in order), every PTR, the counts and the record keys.
func sameView(got, want *netView) error {
	if got.records != want.records || got.nameCount != want.nameCount || got.skipped != want.skipped {
		return fmt.Errorf("records/names/skipped %d/%d/%d, rebuild %d/%d/%d", got.records, got.nameCount, got.skipped, want.records, want.nameCount, want.skipped)
	}
	byKey := func(x *recIndex) []recordNames {
		all := x.all()
		slices.SortFunc(all, func(a, b recordNames) int { return cmp.Compare(a.key, b.key) })
		return all
	}
	if !slices.EqualFunc(byKey(&got.recs), byKey(&want.recs), func(a, b recordNames) bool { return a.key == b.key && slices.Equal(a.names, b.names) }) {
		return fmt.Errorf("records' keys or names differ")
	}
	for _, rn := range got.recs.all() { // each where find looks for it
		if s, at, found, _ := got.recs.find(rn.key); !found || got.recs.shards[s][at].key != rn.key {
			return fmt.Errorf("record key %x not found", rn.key)
		}
	}
	if got.recs.n != len(got.recs.all()) {
		return fmt.Errorf("record index counts %d, holds %d", got.recs.n, len(got.recs.all()))
	}
	if !maps.Equal(got.shared, want.shared) {
		return fmt.Errorf("shared %v, rebuild %v", slices.Sorted(maps.Keys(got.shared)), slices.Sorted(maps.Keys(want.shared)))
	}
	if gp, wp := plainMap(&got.ptr), plainMap(&want.ptr); !maps.Equal(gp, wp) {
		return fmt.Errorf("ptr %v, rebuild %v", gp, wp)
	}
	gn, wn := plainMap(&got.names), plainMap(&want.names)
	if len(gn) != len(wn) || got.names.len() != len(gn) {
		return fmt.Errorf("%d names (counted %d), rebuild %d", len(gn), got.names.len(), len(wn))
	}
	for name, we := range wn {
		ge := gn[name]
		if ge == nil {
			return fmt.Errorf("%s missing", name)
		}
		if !slices.Equal(ge.v4, we.v4) || !slices.Equal(ge.v6, we.v6) {
			return fmt.Errorf("%s: %v %v, rebuild %v %v", name, ge.v4, ge.v6, we.v4, we.v6)
		}
		// What queries see: the lookup finds it in its shard.
		if e, _ := got.names.get(name); e != ge {
			return fmt.Errorf("%s held in the wrong shard", name)
		}
	}
	return nil
}

// plainMap returns the keys and values of m.
func plainMap[V comparable](m *shardMap[V]) map[string]V {
	out := map[string]V{}
	m.all(func(k string, v V) { out[k] = v })
	return out
}

// Random sequences of adds, replacements and deletes over few names and addresses (so that
// they collide often): whenever withRecord takes a record, or withoutRecord removes one,
// the view equals buildView of the same records; a replacement is never taken. A refused
// change is applied by a rebuild, as the server does. Views built by a rebuild and views
// grown or shrunk incrementally both feed the next step.
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
			taken, refused, deleted, kept, absent := 0, 0, 0, 0, 0
			for step := range 300 {
				id := fmt.Sprintf("c%02d", rnd.IntN(30))
				if rnd.IntN(3) == 0 { // a DEL
					key := records.RecordKey{Network: network.Name, ContainerID: id, IfName: "eth0"}
					_, had := held[key]
					delete(held, key)
					want := rebuild()
					got, ok := cur.withoutRecord(id, "eth0")
					switch {
					case !ok:
						kept++
						cur = want
						continue
					case !had:
						if got != cur {
							t.Fatalf("seed %d step %d: a DEL of %s, which the view does not hold, changed it", seed, step, key)
						}
						absent++
					default:
						deleted++
					}
					if err := sameView(got, want); err != nil {
						t.Fatalf("network %s seed %d step %d, DEL of %s: %v", network.Name, seed, step, id, err)
					}
					cur = got
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
			if taken < 20 || refused < 20 || deleted < 10 || kept < 10 || absent < 5 {
				t.Fatalf("seed %d: %d records taken, %d refused, %d removed, %d DELs refused, %d of records not held: the sequence does not test every path",
					seed, taken, refused, deleted, kept, absent)
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
// held before still answer. A DEL removes the record's names and PTR alone (the
// incremental deletes counter moves), unless a name is shared. A replacement, a DEL of a
// shared name and a network that gained a gateway take the re-read of the network, and
// the new gateway is listened on.
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
			if got := slices.Sorted(slices.Values(answers(m))); !slices.Equal(got, want) { // round robin
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
	reads++
	del := func(id string) {
		t.Helper()
		if err := w.Delete(ctx, "a", id, "eth0"); err != nil {
			t.Fatal(err)
		}
		if err := ReloadRecord(e.sock, records.RecordKey{Network: "a", ContainerID: id, IfName: "eth0"}); err != nil {
			t.Fatal(err)
		}
	}
	wantPTR := func(rev string, want ...string) {
		t.Helper()
		m := e.mustQuery("udp", gwA, clientA, rev, dns.TypePTR)
		if got := answers(m); !slices.Equal(got, want) {
			t.Fatalf("PTR %s: %v, want %v", rev, got, want)
		}
	}
	// A DEL of a record that shares nothing: its names and PTR go without a read of the
	// network, the others stay.
	wantPTR("22.0.10.127.in-addr.arpa", "renamed.dns.moor.")
	del("new")
	wantA(gwA, "renamed")
	wantA(gwA, "renamed.a")
	wantA(gwA, "renamed.dns.moor")
	wantPTR("22.0.10.127.in-addr.arpa")
	wantA(gwA, "old", "127.10.0.20")
	wantPTR("20.0.10.127.in-addr.arpa", "old.dns.moor.")
	if metric("moor_dns_incremental_deletes_total") != 1 || metric("moor_dns_network_reads_total") != reads || metric("moor_dns_reloads_total") != reloads {
		t.Fatal("the DEL was not applied incrementally")
	}
	// Again: the view holds no such record, nothing changes and nothing is read.
	del("new")
	if metric("moor_dns_incremental_deletes_total") != 2 || metric("moor_dns_network_reads_total") != reads {
		t.Fatal("a repeated DEL read the network")
	}
	// A DEL of a record with a name another record holds too: the network is re-read and
	// the name keeps the other's address.
	// (Written by the other writer and read by a full reload: the server's own watch
	// would re-read the network at a time of its choosing.)
	for _, r := range []records.Record{rec("a", "s1", []string{"127.10.0.30"}, "s1", "both"), rec("a", "s2", []string{"127.10.0.31"}, "s2", "both")} {
		if err := w.Put(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := Reload(e.sock); err != nil {
		t.Fatal(err)
	}
	wantA(gwA, "both", "127.10.0.30", "127.10.0.31")
	reads = metric("moor_dns_network_reads_total")
	del("s1")
	wantA(gwA, "both", "127.10.0.31")
	wantA(gwA, "s1")
	wantA(gwA, "s2", "127.10.0.31")
	wantPTR("30.0.10.127.in-addr.arpa")
	if metric("moor_dns_incremental_deletes_total") != 2 || metric("moor_dns_network_reads_total") != reads+1 {
		t.Fatal("a DEL of a shared name was not applied by re-reading the network")
	}
	// The rebuild knows "both" is held once now: the next DEL is incremental.
	del("s2")
	wantA(gwA, "both")
	wantA(gwA, "s2")
	wantA(gwA, "old", "127.10.0.20")
	if metric("moor_dns_incremental_deletes_total") != 3 || metric("moor_dns_network_reads_total") != reads+1 {
		t.Fatal("a DEL after the shared name's other holder left was not incremental")
	}

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

// A network grown from nothing by incremental ADDs alone (its maps get more shards on the
// way) and then shrunk by incremental DELs equals a rebuild all along, and the views it
// was copied from still equal theirs (queries may be reading them).
func TestIncrementalViewAtScale(t *testing.T) {
	const n = 3000
	var held []records.Record
	cur, _ := buildView(netA, nil, DefaultDomain)
	type past struct {
		v    *netView
		recs []records.Record
	}
	var pasts []past
	check := func(step string) {
		t.Helper()
		want, _ := buildView(netA, slices.Clone(held), DefaultDomain)
		if err := sameView(cur, want); err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		pasts = append(pasts, past{cur, slices.Clone(held)})
	}
	for i := range n {
		r := rec("a", fmt.Sprintf("id%05d", i), []string{fmt.Sprintf("127.10.%d.%d", i/250, i%250+1), fmt.Sprintf("fd00:10::%x", i+1)},
			fmt.Sprintf("ctr-%05d", i), fmt.Sprintf("%012x", i))
		v, ok := cur.withRecord(r)
		if !ok {
			t.Fatalf("record %d refused", i)
		}
		cur = v
		held = append(held, r)
		if i%500 == 0 {
			check(fmt.Sprintf("after %d ADDs", i+1))
		}
	}
	check("grown")
	if s := len(cur.names.shards); s < shardsFor(cur.names.len())/2 {
		t.Fatalf("%d names in %d shards", cur.names.len(), s)
	}
	if s := len(cur.recs.shards); s < shardsFor(n)/2 {
		t.Fatalf("%d records in %d shards", n, s)
	}
	rnd := rand.New(rand.NewPCG(3, 4))
	for i, j := range rnd.Perm(n)[:n-10] {
		r := held[slices.IndexFunc(held, func(r records.Record) bool { return r.ContainerID == fmt.Sprintf("id%05d", j) })]
		v, ok := cur.withoutRecord(r.ContainerID, r.IfName)
		if !ok {
			t.Fatalf("DEL of %s refused", r.ContainerID)
		}
		cur = v
		held = slices.DeleteFunc(held, func(h records.Record) bool { return h.ContainerID == r.ContainerID })
		if i%500 == 0 {
			check(fmt.Sprintf("after %d DELs", i+1))
		}
	}
	check("shrunk")
	for i, p := range pasts {
		want, _ := buildView(netA, p.recs, DefaultDomain)
		if err := sameView(p.v, want); err != nil {
			t.Fatalf("view %d changed after it was copied: %v", i, err)
		}
	}
}

// NameUnheld is true only for the server's own NXDOMAIN in its zone: a held name (also a
// name held as another form, or without the asked type), a name outside the zone, and a
// server that does not answer are "may be held".
func TestNameUnheld(t *testing.T) {
	// The plugin asks from the host, whose source address towards the gateway is the
	// gateway's own: on loopback, 127.0.0.1.
	const gw = "127.0.0.1"
	e := newEnv(t, []records.Network{testNet("l", gw, "127.0.0.0/8")}, nil)
	e.put(rec("l", "web", []string{"fd00:10::5"}, "web", "alias1"))
	addr := net.JoinHostPort(gw, strconv.Itoa(e.port))
	for _, c := range []struct {
		name, zone string
		want       bool
	}{
		{"nobody", DefaultDomain, true},
		{"NoBody", DefaultDomain + ".", true},
		{"web", DefaultDomain, false},    // held (AAAA only: NODATA for A)
		{"alias1", DefaultDomain, false}, // held as an alias
		{"nobody", "other.zone", false},  // not the server's zone: forwarded, no upstream
	} {
		if got := NameUnheld(addr, c.name, c.zone, time.Second); got != c.want {
			t.Errorf("NameUnheld(%s, %s) = %v, want %v", c.name, c.zone, got, c.want)
		}
	}
	// Nobody listening.
	if NameUnheld(net.JoinHostPort(gw, strconv.Itoa(freePort(t, gw))), "nobody", DefaultDomain, 200*time.Millisecond) {
		t.Error("NameUnheld without a server is true")
	}
}
