package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moornet/moor/dns/records"
)

// listOnly hides the Local store's names counter: namesHeld then lists every record, as it
// does for stores without one.
type listOnly struct{ records.Store }

// storeWithNetwork returns a Local store in a temp dir holding network "n" (10.89.0.0/24).
func storeWithNetwork(t *testing.T) *records.Local {
	t.Helper()
	st, err := records.NewLocal(filepath.Join(t.TempDir(), "dns"))
	if err != nil {
		t.Fatal(err)
	}
	_, sn, _ := net.ParseCIDR("10.89.0.0/24")
	if err := st.PutNetwork(context.Background(), records.Network{Name: "n", Gateways: []net.IP{net.ParseIP("10.89.0.1")}, Subnets: []*net.IPNet{sn}}); err != nil {
		t.Fatal(err)
	}
	return st
}

// The names counter gives checkNameBounds the same answer as listing every record: the
// attachment's own record does not count, a corrupt record holds no names, and the refusal
// names the count held.
func TestNameBoundsCounterMatchesList(t *testing.T) {
	ctx := context.Background()
	st := storeWithNetwork(t)
	put := func(id string, names ...string) {
		t.Helper()
		if err := st.Put(ctx, records.Record{Network: "n", ContainerID: id, IfName: "eth0", Names: names, IPs: []net.IP{net.ParseIP("10.89.0.9")}}); err != nil {
			t.Fatal(err)
		}
	}
	put("own", "a", "b", "c")
	for i := range 5 {
		put(fmt.Sprintf("other%d", i), fmt.Sprintf("x%d", i), fmt.Sprintf("y%d", i))
	}
	if err := os.WriteFile(filepath.Join(st.Root(), "n", "bad.eth0.json"), []byte("{"), 0o640); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		id   string
		want int
	}{{"own", 10}, {"new", 13}} {
		for _, s := range []records.Store{st, listOnly{st}} {
			got, err := namesHeld(ctx, s, "n", tc.id, "eth0")
			if err != nil || got != tc.want {
				t.Errorf("%T: namesHeld for %s = %d, %v; want %d", s, tc.id, got, err, tc.want)
			}
		}
	}
	// Fill up to one name short of the bound (with records written as the plugin would).
	held := 13
	for i := 0; held+records.MaxNamesPerRecord < records.MaxNamesPerNetwork; i++ {
		names := make([]string, records.MaxNamesPerRecord)
		for j := range names {
			names[j] = fmt.Sprintf("f%d-%d", i, j)
		}
		put(fmt.Sprintf("fill%d", i), names...)
		held += len(names)
	}
	for _, s := range []records.Store{st, listOnly{st}} {
		left := records.MaxNamesPerNetwork - held
		ok := make([]string, left)
		if err := checkNameBounds(ctx, s, "n", "new", "eth0", ok); err != nil {
			t.Errorf("%T: %d names within the bound refused: %v", s, left, err)
		}
		err := checkNameBounds(ctx, s, "n", "new", "eth0", make([]string, left+1))
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("network n holds %d names; at most %d names per network", held, records.MaxNamesPerNetwork)) {
			t.Errorf("%T: one name past the bound: %v", s, err)
		}
	}
}
