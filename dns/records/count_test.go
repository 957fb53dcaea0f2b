package records_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/moornet/moor/dns/records"
	"github.com/moornet/moor/dns/records/recordstest"
)

// listedNames is what NamesHeld must return: the names of every readable record.
func listedNames(t *testing.T, s *records.Local, network string) int {
	t.Helper()
	recs, _ := s.List(t.Context(), network)
	n := 0
	for _, r := range recs {
		n += len(r.Names)
	}
	return n
}

func wantHeld(t *testing.T, s *records.Local, network, step string) {
	t.Helper()
	got, err := s.NamesHeld(t.Context(), network)
	if err != nil {
		t.Fatalf("%s: NamesHeld: %v", step, err)
	}
	if want := listedNames(t, s, network); got != want {
		t.Fatalf("%s: NamesHeld = %d, the records hold %d", step, got, want)
	}
}

// The names counter follows random puts, replacements and deletes, and heals from what
// a crash or a moor that does not know it leaves: a missing, stale or corrupt counter, a
// record file written or removed behind its back.
func TestLocalNamesHeld(t *testing.T) {
	s, ctx := newLocalWithRecord(t)
	dir := filepath.Join(s.Root(), "a")
	counter := filepath.Join(dir, ".names")
	rnd := rand.New(rand.NewPCG(1, 2))
	names := func() []string {
		out := make([]string, 1+rnd.IntN(5))
		for i := range out {
			out[i] = fmt.Sprintf("n%d", rnd.IntN(1000))
		}
		return out
	}
	for i := range 300 {
		id := fmt.Sprintf("c%02d", rnd.IntN(40))
		step := fmt.Sprintf("step %d (%s)", i, id)
		switch rnd.IntN(8) {
		case 0, 1, 2:
			if err := s.Put(ctx, recordstest.Rec("a", id, "10.88.0.9", names()...)); err != nil {
				t.Fatalf("%s: %v", step, err)
			}
		case 3, 4:
			if err := s.Delete(ctx, "a", id, "eth0"); err != nil {
				t.Fatalf("%s: %v", step, err)
			}
		case 5: // a record written by a moor without the counter
			p := filepath.Join(dir, id+".eth0.json")
			if _, err := os.Stat(p); err == nil {
				// A replacement keeps the count of files: only a missing counter
				// (Put removes it first) is noticed.
				_ = os.Remove(counter)
			}
			data := fmt.Sprintf(`{"version":1,"network":"a","containerID":"%s","ifName":"eth0","names":["x%d","y%d"],"ips":["10.88.0.7"]}`, id, i, i)
			if err := os.WriteFile(p, []byte(data), 0o640); err != nil {
				t.Fatal(err)
			}
		case 6: // removed behind its back
			_ = os.Remove(filepath.Join(dir, id+".eth0.json"))
		case 7: // a torn or foreign counter
			if err := os.WriteFile(counter, []byte(`{"version":1,"records":`), 0o640); err != nil {
				t.Fatal(err)
			}
		}
		wantHeld(t, s, "a", step)
	}
	// A corrupt record holds no names; the counter is not a record.
	if err := os.WriteFile(filepath.Join(dir, "zz.eth0.json"), []byte("{"), 0o640); err != nil {
		t.Fatal(err)
	}
	wantHeld(t, s, "a", "corrupt record")
	recs, _ := s.List(ctx, "a")
	for _, r := range recs {
		if r.ContainerID == ".names" {
			t.Fatal("List returned the counter as a record")
		}
	}
	if _, err := os.Stat(counter); err != nil {
		t.Fatalf("no counter after NamesHeld: %v", err)
	}
	if got, err := s.NamesHeld(ctx, "nonet"); err != nil || got != 0 {
		t.Fatalf("NamesHeld of a missing network = %d, %v; want 0, nil", got, err)
	}
}

func TestLocalGet(t *testing.T) {
	s, ctx := newLocalWithRecord(t)
	r, err := s.Get(ctx, "a", "abc123", "eth0")
	if err != nil || len(r.Names) != 1 || r.Names[0] != "web" || r.IPs[0].String() != "10.88.0.2" {
		t.Fatalf("Get = %+v, %v", r, err)
	}
	for _, k := range [][3]string{{"a", "abc123", "eth1"}, {"a", "nope", "eth0"}, {"b", "abc123", "eth0"}} {
		if _, err := s.Get(ctx, k[0], k[1], k[2]); !errors.Is(err, records.ErrNoRecord) {
			t.Errorf("Get(%v) = %v, want ErrNoRecord", k, err)
		}
	}
	if _, err := s.Get(ctx, "a", "../x", "eth0"); err == nil {
		t.Error("Get accepted an invalid container ID")
	}
}
