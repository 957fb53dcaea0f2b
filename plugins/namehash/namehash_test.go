package namehash_test

import (
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"testing"

	"github.com/moornet/moor/plugins/namehash"
)

// TestSum256KnownAnswers checks the FIPS 180-4 examples and the empty input.
func TestSum256KnownAnswers(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
		{"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
		{"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
	} {
		got := namehash.Sum256([]byte(tc.in))
		if hex.EncodeToString(got[:]) != tc.want {
			t.Errorf("Sum256(%q) = %x, want %s", tc.in, got, tc.want)
		}
	}
}

// TestSum256MatchesCrypto compares with crypto/sha256 on every length around the block
// and padding boundaries (55, 56, 63, 64, 119, 120 ...) and on random inputs: names on
// the host and on disk were made with crypto/sha256 and must not change.
func TestSum256MatchesCrypto(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 300)
	for n := 0; n <= len(buf); n++ {
		for range 3 {
			for i := range buf[:n] {
				buf[i] = byte(r.Uint32())
			}
			if got, want := namehash.Sum256(buf[:n]), sha256.Sum256(buf[:n]); got != want {
				t.Fatalf("length %d: Sum256 = %x, crypto/sha256 = %x", n, got, want)
			}
		}
	}
	name := []byte("mynet\x00" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\x00eth0")
	if namehash.Sum256(name) != sha256.Sum256(name) {
		t.Fatal("a veth altname input hashes differently")
	}
}
