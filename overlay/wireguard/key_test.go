package wireguard_test

import (
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/moornet/moor/overlay/wireguard"
	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/statefs"
)

// TestPublicKeyRFC7748: the public key is X25519 of the base point (RFC 7748, section 6.1).
func TestPublicKeyRFC7748(t *testing.T) {
	var k wireguard.Key
	b, _ := hex.DecodeString("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
	copy(k[:], b)
	pub := k.Public()
	if got := hex.EncodeToString(pub[:]); got != "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a" {
		t.Fatalf("public key %s", got)
	}
}

// TestKeyPersistsRootOnly: the first call makes the key in a root-only file under a
// root-only directory; later calls (an agent restart) read the same key; rotation writes a
// new one that the next load returns.
func TestKeyPersistsRootOnly(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	k1, created, err := wireguard.LoadOrCreateKey(dir, "ov")
	if err != nil || !created {
		t.Fatalf("first use: created %v, %v", created, err)
	}
	path := wireguard.KeyPath(dir, "ov")
	for p, want := range map[string]os.FileMode{path: 0o600, filepath.Dir(path): 0o700} {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != want {
			t.Fatalf("%s: mode %v, %v; want %04o", p, fi.Mode().Perm(), err, want)
		}
	}
	k2, created, err := wireguard.LoadOrCreateKey(dir, "ov")
	if err != nil || created || k2 != k1 {
		t.Fatalf("second use: created %v, same key %v, %v", created, k2 == k1, err)
	}
	k3, err := wireguard.RotateKey(dir, "ov")
	if err != nil || k3 == k1 || k3.Public() == k1.Public() {
		t.Fatalf("rotation: %v, new key %v", err, k3 != k1)
	}
	if k4, err := wireguard.LoadKey(dir, "ov"); err != nil || k4 != k3 {
		t.Fatalf("after rotation the file holds the new key: %v %v", k4 == k3, err)
	}
	if other, _, err := wireguard.LoadOrCreateKey(dir, "ov2"); err != nil || other == k3 {
		t.Fatalf("another network shares the key: %v", err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 2 {
		t.Fatalf("state directory holds %d files, want the two keys (no temporary file left)", len(entries))
	}
	if err := wireguard.RemoveKey(dir, "ov"); err != nil {
		t.Fatal(err)
	}
	if _, err := wireguard.LoadKey(dir, "ov"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after RemoveKey: %v", err)
	}
}

// TestKeyUnsafePathsRefused: a symbolic link in the key's place, a directory others may
// write, and a key file others may read are refused with code 7 and never read or
// overwritten.
func TestKeyUnsafePathsRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	if _, _, err := wireguard.LoadOrCreateKey(dir, "ov"); err != nil {
		t.Fatal(err)
	}
	path := wireguard.KeyPath(dir, "ov")
	target := filepath.Join(t.TempDir(), "elsewhere")
	if err := os.WriteFile(target, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := wireguard.KeyPath(dir, "linked")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	loose := filepath.Join(t.TempDir(), "loose")
	if err := os.MkdirAll(filepath.Join(loose, "wireguard"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(loose, "wireguard"), 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	for name, load := range map[string]func() error{
		"symlink":             func() error { _, _, err := wireguard.LoadOrCreateKey(dir, "linked"); return err },
		"loose dir":           func() error { _, _, err := wireguard.LoadOrCreateKey(loose, "ov"); return err },
		"readable key":        func() error { _, err := wireguard.LoadKey(dir, "ov"); return err },
		"rotate in loose dir": func() error { _, err := wireguard.RotateKey(loose, "ov"); return err },
	} {
		var unsafe *statefs.UnsafeError
		if err := load(); !errors.As(err, &unsafe) || unsafe.CNICode() != codes.InvalidNetworkConfig {
			t.Errorf("%s: %v, want an unsafe state path (code 7)", name, err)
		}
	}
	if data, _ := os.ReadFile(target); string(data) != "x" {
		t.Fatalf("the link's target was written: %q", data)
	}
}
