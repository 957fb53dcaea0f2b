// Package sysrand reads random bytes straight from the kernel (getrandom(2)) for the
// values moor makes up: locally administered MAC addresses, temporary link names and
// temporary file names. None of these is a secret; they only have to differ between
// calls and between processes.
//
// Why not crypto/rand: linking it pulls Go's FIPS 140 module (DRBG, AES, SHA-2/3, HMAC,
// self-tests) and math/big into every plugin, about 200 KB of code and tables that a
// plugin process maps at every start and mostly faults in, for bytes the kernel hands
// out in one system call. Like crypto/rand.Read, Read never returns short: a kernel that
// cannot give random bytes at all is beyond repair, so it panics.
//
// What it is not: a key generator. Secrets (WireGuard keys, certificates) keep using
// crypto/rand in the packages that make them.
package sysrand

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// Read fills b with random bytes.
func Read(b []byte) {
	for len(b) > 0 {
		n, err := unix.Getrandom(b, 0)
		if err == unix.EINTR {
			continue
		}
		if err == unix.ENOSYS { // kernels before 3.17
			readURandom(b)
			return
		}
		if err != nil {
			panic(fmt.Sprintf("sysrand: getrandom: %v", err))
		}
		b = b[n:]
	}
}

func readURandom(b []byte) {
	f, err := os.Open("/dev/urandom")
	if err == nil {
		defer f.Close()
		_, err = io.ReadFull(f, b)
	}
	if err != nil {
		panic(fmt.Sprintf("sysrand: /dev/urandom: %v", err))
	}
}

// textAlphabet is the base32 alphabet of RFC 4648, the one crypto/rand.Text uses.
const textAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"

// Text returns a random string of 26 base32 characters: 130 bits, enough that two calls
// never collide in practice.
func Text() string {
	b := make([]byte, 26)
	Read(b)
	for i := range b {
		b[i] = textAlphabet[b[i]%32]
	}
	return string(b)
}
