package sysrand_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/moornet/moor/plugins/sysrand"
)

// TestReadFillsAndDiffers: every byte is written (a buffer of zeros and one of 0xff both
// change), large reads work, and two reads differ.
func TestReadFillsAndDiffers(t *testing.T) {
	for _, n := range []int{1, 6, 16, 300, 1 << 20} {
		a := make([]byte, n)
		b := bytes.Repeat([]byte{0xff}, n)
		sysrand.Read(a)
		sysrand.Read(b)
		if n >= 16 && bytes.Equal(a, b) {
			t.Fatalf("two reads of %d bytes are equal", n)
		}
		if n >= 300 && (bytes.Count(a, []byte{0}) > n/16 || bytes.Count(b, []byte{0xff}) > n/16) {
			t.Fatalf("read of %d bytes left its buffer mostly as it was", n)
		}
	}
}

func TestText(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		s := sysrand.Text()
		if len(s) != 26 || strings.Trim(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") != "" {
			t.Fatalf("Text() = %q: want 26 base32 characters", s)
		}
		if seen[s] {
			t.Fatalf("Text() returned %q twice", s)
		}
		seen[s] = true
	}
}
