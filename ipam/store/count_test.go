package store

import (
	"math/big"
	"math/rand/v2"
	"net/netip"
	"testing"
)

func (c Count) big() *big.Int {
	n := new(big.Int).SetUint64(c.hi)
	return n.Lsh(n, 64).Or(n, new(big.Int).SetUint64(c.lo))
}

var maxCount = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 128), big.NewInt(1))

// TestCountMatchesBig: Add, Sub, Uint64 and String agree with math/big, saturating at 0
// and 2^128-1, on random values of every magnitude.
func TestCountMatchesBig(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	val := func() Count {
		switch r.IntN(4) {
		case 0:
			return Count{lo: r.Uint64() >> r.UintN(64)}
		case 1:
			return Count{hi: r.Uint64() >> r.UintN(64), lo: r.Uint64()}
		case 2:
			return Count{hi: ^uint64(0), lo: ^uint64(0) - r.Uint64N(3)}
		}
		return Count{hi: r.Uint64N(2), lo: r.Uint64()}
	}
	for range 20000 {
		a, b := val(), val()
		sum := new(big.Int).Add(a.big(), b.big())
		if sum.Cmp(maxCount) > 0 {
			sum = maxCount
		}
		if got := a.Add(b).big(); got.Cmp(sum) != 0 {
			t.Fatalf("%s + %s = %s, want %s", a, b, got, sum)
		}
		diff := new(big.Int).Sub(a.big(), b.big())
		if diff.Sign() < 0 {
			diff.SetInt64(0)
		}
		if got := a.Sub(b).big(); got.Cmp(diff) != 0 {
			t.Fatalf("%s - %s = %s, want %s", a, b, got, diff)
		}
		if a.String() != a.big().String() {
			t.Fatalf("String() = %s, want %s", a.String(), a.big().String())
		}
		want := uint64(1<<64 - 1)
		if a.big().IsUint64() {
			want = a.big().Uint64()
		}
		if a.Uint64() != want {
			t.Fatalf("%s.Uint64() = %d, want %d", a, a.Uint64(), want)
		}
	}
	for _, c := range []Count{{}, {lo: 9}, {lo: 10}, {lo: 1e19 - 1}, {lo: 1e19}, {hi: 1}, {hi: 5421010862427522170, lo: 687399551400673280}} {
		if c.String() != c.big().String() {
			t.Errorf("String() = %s, want %s", c.String(), c.big().String())
		}
	}
}

// TestRangeSize: the number of addresses of IPv4 and IPv6 blocks, minus the skipped
// addresses inside them, each counted once.
func TestRangeSize(t *testing.T) {
	a := netip.MustParseAddr
	for _, tc := range []struct {
		r    Range
		want string
	}{
		{Range{First: a("10.0.0.1"), Last: a("10.0.0.254")}, "254"},
		{Range{First: a("10.0.0.1"), Last: a("10.0.0.254"), Skip: []netip.Addr{a("10.0.0.1"), a("10.0.0.1"), a("10.0.1.1")}}, "253"},
		{Range{First: a("0.0.0.0"), Last: a("255.255.255.255")}, "4294967296"},
		{Range{First: a("fd00::1"), Last: a("fd00::ffff:ffff:ffff:ffff")}, "18446744073709551615"},
		{Range{First: a("fd00::"), Last: a("fd00:0:0:1::")}, "18446744073709551617"},
		{Range{First: a("::"), Last: a("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe")}, "340282366920938463463374607431768211455"},
		{Range{First: a("::"), Last: a("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")}, "340282366920938463463374607431768211455"}, // 2^128, saturated
	} {
		if got := tc.r.Size().String(); got != tc.want {
			t.Errorf("%s-%s skip %v: Size() = %s, want %s", tc.r.First, tc.r.Last, tc.r.Skip, got, tc.want)
		}
	}
	p := Pool{Ranges: []Range{{First: a("10.0.0.1"), Last: a("10.0.0.10")}, {First: a("fd00::1"), Last: a("fd00::a")}}}
	if got := p.Size().String(); got != "20" {
		t.Errorf("pool size %s, want 20", got)
	}
	e := &ExhaustedError{Pool: "p", InUse: p.Size(), Size: p.Size()}
	if e.Error() != "pool p: 20 of 20 addresses in use" {
		t.Errorf("ExhaustedError = %q", e.Error())
	}
}
