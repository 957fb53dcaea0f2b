package store

import (
	"math"
	"math/bits"
	"net/netip"
)

// Count is a number of addresses. An IPv6 range holds up to 2^128 of them, more than a
// uint64, so it is a 128-bit unsigned integer; it saturates at 2^128-1 (only the whole
// IPv6 space, ::/0, is larger, and a pool that size is never exhausted) and at 0.
//
// Why not math/big: sizes are only added, decremented and printed, and math/big adds
// about 60 KB of code to every binary that links the store (moor-bridge, moor-macvlan,
// moor-ipam), code each plugin process maps and faults in at start-up.
type Count struct{ hi, lo uint64 }

// CountOf is n as a Count.
func CountOf(n uint64) Count { return Count{lo: n} }

// Add returns c+d (saturating).
func (c Count) Add(d Count) Count {
	lo, carry := bits.Add64(c.lo, d.lo, 0)
	hi, over := bits.Add64(c.hi, d.hi, carry)
	if over != 0 {
		return Count{math.MaxUint64, math.MaxUint64}
	}
	return Count{hi, lo}
}

// Sub returns c-d, or 0 when d is larger.
func (c Count) Sub(d Count) Count {
	lo, borrow := bits.Sub64(c.lo, d.lo, 0)
	hi, under := bits.Sub64(c.hi, d.hi, borrow)
	if under != 0 {
		return Count{}
	}
	return Count{hi, lo}
}

// Uint64 returns c, or math.MaxUint64 when c does not fit.
func (c Count) Uint64() uint64 {
	if c.hi != 0 {
		return math.MaxUint64
	}
	return c.lo
}

// String is c in decimal.
func (c Count) String() string {
	if c.hi == 0 {
		return uitoa(c.lo, 0)
	}
	// Two or three groups of 19 digits: divide by 10^19, which fits in a uint64.
	const e19 = 10_000_000_000_000_000_000
	q1hi := c.hi / e19
	q1lo, r1 := bits.Div64(c.hi%e19, c.lo, e19) // c = (q1hi:q1lo)*e19 + r1
	if q1hi == 0 {
		return uitoa(q1lo, 0) + uitoa(r1, 19)
	}
	q2, r2 := bits.Div64(q1hi, q1lo, e19)
	return uitoa(q2, 0) + uitoa(r2, 19) + uitoa(r1, 19)
}

// uitoa is n in decimal, with leading zeros up to width digits.
func uitoa(n uint64, width int) string {
	var b [20]byte
	i := len(b)
	for n >= 10 || len(b)-i < width-1 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	i--
	b[i] = byte('0' + n)
	return string(b[i:])
}

// countOfAddr is a as a 128-bit number (an IPv4 address is its 32-bit value).
func countOfAddr(a netip.Addr) Count {
	if a.Is4() {
		b := a.As4()
		return Count{lo: uint64(b[0])<<24 | uint64(b[1])<<16 | uint64(b[2])<<8 | uint64(b[3])}
	}
	b := a.As16()
	var c Count
	for i := 0; i < 8; i++ {
		c.hi = c.hi<<8 | uint64(b[i])
		c.lo = c.lo<<8 | uint64(b[8+i])
	}
	return c
}
