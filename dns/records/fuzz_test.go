package records_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/moornet/moor/dns/records"
	"github.com/moornet/moor/dns/records/recordstest"
)

// FuzzValidName: an accepted name is a DNS name that cannot escape a directory, break a
// zone file line or a log line (no '/', space, control character), within RFC lengths.
func FuzzValidName(f *testing.F) {
	for _, s := range []string{"web", "www.site", "sharp_newton", "a-b.c", "-x", "a..b", "a/b", "../x", "x\x00", strings.Repeat("a", 64), "a b", "UPPER.case"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if records.ValidName(name) != nil {
			return
		}
		if len(name) > 253 || strings.ContainsAny(name, "/\\ \t\r\n\x00") || strings.HasPrefix(name, ".") || strings.HasSuffix(name, ".") {
			t.Fatalf("ValidName accepted %q", name)
		}
		for _, r := range name {
			if r < 0x21 || r > 0x7e {
				t.Fatalf("ValidName accepted %q with byte %q", name, r)
			}
		}
		if _, ok := dns.IsDomainName(name); !ok {
			t.Fatalf("ValidName accepted %q, which is not a domain name", name)
		}
	})
}

// FuzzNormalizeUpstream: an accepted upstream is a canonical ip:port with a port, and
// normalising it again changes nothing.
func FuzzNormalizeUpstream(f *testing.F) {
	for _, s := range []string{"10.0.0.53", "10.0.0.53:5353", "[fd00::53]:53", "fd00::53", "::ffff:10.0.0.1", "fe80::1%eth0", "dns.example", "10.0.0.53:0", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, u string) {
		n, err := records.NormalizeUpstream(u)
		if err != nil {
			return
		}
		ap, perr := netip.ParseAddrPort(n)
		if perr != nil || ap.Port() == 0 || ap.Addr().Zone() != "" || ap.Addr().Is4In6() {
			t.Fatalf("NormalizeUpstream(%q) = %q", u, n)
		}
		if again, err := records.NormalizeUpstream(n); err != nil || again != n {
			t.Fatalf("NormalizeUpstream(%q) = %q, then %q, %v", u, n, again, err)
		}
	})
}

// FuzzStoreFiles puts arbitrary bytes in a network file and a record file of a Local
// store, as a crash, a full disk or a hostile writer might leave them: reading never
// panics, a bad file is a *CorruptError, and what is read is as valid as what Put accepts.
func FuzzStoreFiles(f *testing.F) {
	f.Add([]byte(`{"version":1,"name":"a","gateways":["10.88.0.1"],"subnets":["10.88.0.0/16"]}`),
		[]byte(`{"version":1,"network":"a","containerID":"abc","ifName":"eth0","names":["web"],"ips":["10.88.0.2"]}`))
	f.Add([]byte(`{"version":1,"name":"a","domain":"Dns.Moor.","gateways":["::ffff:10.88.0.1","fd00::1"],"subnets":["10.88.0.5/16","fd00::/64"],"upstreams":["10.0.0.53"]}`),
		[]byte(`{"network":"a","containerID":"abc","ifName":"eth0","names":["WEB","web","a/b"],"ips":["10.88.0.2","10.88.0.2"]}`))
	f.Add([]byte(`{"name":"b","gateways":[],"subnets":null}`), []byte(`{"network":"a","containerID":"other","ifName":"eth0","names":["x"],"ips":["0.0.0.0"]}`))
	f.Add([]byte(`not json`), []byte{0xff, 0xfe, 0})
	root := filepath.Join(f.TempDir(), "dns")
	st, err := records.NewLocal(root)
	if err != nil {
		f.Fatal(err)
	}
	ctx := context.Background()
	if err := st.PutNetwork(ctx, recordstest.Net("a")); err != nil {
		f.Fatal(err)
	}
	dir := filepath.Join(root, "a")
	f.Fuzz(func(t *testing.T, network, record []byte) {
		if err := os.WriteFile(filepath.Join(dir, "network.json"), network, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "abc.eth0.json"), record, 0o600); err != nil {
			t.Fatal(err)
		}
		nets, err := st.Networks(ctx)
		checkCorrupt(t, err)
		for _, n := range nets {
			if n.Name != "a" || len(n.Gateways) == 0 || len(n.Subnets) == 0 {
				t.Fatalf("network read: %+v", n)
			}
			// What was read can be written again: it is as valid as a fresh network.
			if err := records.ValidNetworkName(n.Name); err != nil {
				t.Fatal(err)
			}
			if n.Domain != "" && records.ValidName(n.Domain) != nil {
				t.Fatalf("domain %q read", n.Domain)
			}
		}
		recs, err := st.List(ctx, "a")
		checkCorrupt(t, err)
		for _, r := range recs {
			if r.Network != "a" || r.ContainerID != "abc" || r.IfName != "eth0" || len(r.Names) == 0 || len(r.IPs) == 0 {
				t.Fatalf("record read: %+v", r)
			}
			for _, n := range r.Names {
				if records.ValidName(n) != nil || n != strings.ToLower(n) {
					t.Fatalf("name %q read", n)
				}
			}
			for _, ip := range r.IPs {
				if a, ok := netip.AddrFromSlice(ip); !ok || a.IsUnspecified() || a.Is4In6() {
					t.Fatalf("address %v read", ip)
				}
			}
		}
	})
}

func checkCorrupt(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	var ce *records.CorruptError
	if !errors.As(err, &ce) {
		t.Fatalf("reading a damaged file: %v (%T), want a *CorruptError", err, err)
	}
}

// A record holds at most MaxNamesPerRecord names: one more is refused on write, naming the
// count and the bound, before any name is looked at, and a file planted with more is refused
// on read; a record at the bound is written and read back de-duplicated. (Duplicates were
// once found by searching the list so far: 40,000 names took 5 s per write.)
func TestManyNamesRecord(t *testing.T) {
	const n = records.MaxNamesPerRecord
	st, err := records.NewLocal(filepath.Join(t.TempDir(), "dns"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := st.PutNetwork(ctx, recordstest.Net("a")); err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, n)
	for i := range n - 1 {
		names = append(names, "n"+strconv.Itoa(i))
	}
	names = append(names, "N7") // a duplicate in another case
	if err := st.Put(ctx, recordstest.Rec("a", "c1", "10.88.0.2", names...)); err != nil {
		t.Fatal(err)
	}
	recs, err := st.List(ctx, "a")
	if err != nil || len(recs) != 1 || len(recs[0].Names) != n-1 {
		t.Fatalf("read back %d records, %v", len(recs), err)
	}
	huge := make([]string, 200000)
	for i := range huge {
		huge[i] = "bad name" // never validated: the count is refused first
	}
	err = st.Put(ctx, recordstest.Rec("a", "c2", "10.88.0.3", huge...))
	var ie *records.InvalidRecordError
	if !errors.As(err, &ie) || ie.Field != "names" || !strings.Contains(err.Error(), "200000 names") || !strings.Contains(err.Error(), strconv.Itoa(n)) {
		t.Fatalf("a record of 200000 names: %v (%T), want an InvalidRecordError naming the count and %d", err, err, n)
	}
	planted := fmt.Sprintf(`{"version":1,"network":"a","containerID":"c3","ifName":"eth0","names":[%s],"ips":["10.88.0.4"]}`,
		strings.TrimSuffix(strings.Repeat(`"x",`, n+1), ","))
	if err := os.WriteFile(filepath.Join(st.Root(), "a", "c3.eth0.json"), []byte(planted), 0o600); err != nil {
		t.Fatal(err)
	}
	recs, err = st.List(ctx, "a")
	var ce *records.CorruptError
	if !errors.As(err, &ce) || len(recs) != 1 {
		t.Fatalf("a planted file of %d names: %d records, %v; want it refused and the other kept", n+1, len(recs), err)
	}
}
