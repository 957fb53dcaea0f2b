package wireguard

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/curve25519"

	"github.com/moornet/moor/plugins/statefs"
)

// KeyLen is the length of a WireGuard (Curve25519) key.
const KeyLen = 32

// Key is a Curve25519 key, private or public.
type Key [KeyLen]byte

// String is the key in base64, as WireGuard tools and the lease write it.
func (k Key) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// ParseKey reads a base64 key.
func ParseKey(s string) (Key, error) {
	var k Key
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != KeyLen {
		return k, fmt.Errorf("%q is not a base64 WireGuard key of %d bytes", s, KeyLen)
	}
	copy(k[:], b)
	return k, nil
}

// Public is the public key of the private key k.
func (k Key) Public() Key {
	var pub Key
	out, err := curve25519.X25519(k[:], curve25519.Basepoint)
	if err != nil { // only for a low-order point, which the base point is not
		panic(err)
	}
	copy(pub[:], out)
	return pub
}

// GenerateKey draws a private key and clamps it (RFC 7748, section 5).
func GenerateKey() (Key, error) {
	var k Key
	if _, err := io.ReadFull(rand.Reader, k[:]); err != nil {
		return k, fmt.Errorf("drawing a private key: %w", err)
	}
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
	return k, nil
}

// KeyPath is where network's private key lives under stateDir.
func KeyPath(stateDir, network string) string {
	return filepath.Join(stateDir, "wireguard", network+".key")
}

// keyMode is the private key file's mode: root only.
const keyMode fs.FileMode = 0o600

// LoadKey reads network's private key (fs.ErrNotExist when the host has none yet).
func LoadKey(stateDir, network string) (Key, error) { return readKey(KeyPath(stateDir, network)) }

// LoadOrCreateKey returns the host's private key for network, making and storing it on
// first use; created reports that this call made it (the caller's undo is RemoveKey).
func LoadOrCreateKey(stateDir, network string) (k Key, created bool, err error) {
	path := KeyPath(stateDir, network)
	k, err = readKey(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return k, false, err
	}
	if k, err = GenerateKey(); err != nil {
		return k, false, err
	}
	if err := writeKey(path, k, false); err != nil {
		if errors.Is(err, fs.ErrExist) { // a concurrent call stored one first: use it
			k, err = readKey(path)
			return k, false, err
		}
		return k, false, err
	}
	return k, true, nil
}

// RotateKey replaces network's private key with a new one and returns it.
func RotateKey(stateDir, network string) (Key, error) {
	k, err := GenerateKey()
	if err != nil {
		return k, err
	}
	return k, writeKey(KeyPath(stateDir, network), k, true)
}

// RemoveKey deletes network's key file; a file already gone is fine.
func RemoveKey(stateDir, network string) error {
	path := KeyPath(stateDir, network)
	if err := statefs.CheckPath(path); err != nil {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func readKey(path string) (Key, error) {
	f, err := statefs.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return Key{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return Key{}, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return Key{}, &statefs.UnsafeError{Path: path, Reason: fmt.Sprintf("a private key readable by group or others (mode %04o)", fi.Mode().Perm())}
	}
	data, err := io.ReadAll(io.LimitReader(f, 128))
	if err != nil {
		return Key{}, err
	}
	k, err := ParseKey(strings.TrimSpace(string(data)))
	if err != nil {
		return Key{}, fmt.Errorf("private key file %s: %w", path, err)
	}
	return k, nil
}

// writeKey stores k at path through a new temporary file renamed into place, so a reader
// never sees half a key; without replace, an existing key wins (fs.ErrExist).
func writeKey(path string, k Key, replace bool) error {
	dir := filepath.Dir(path)
	if err := statefs.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp := fmt.Sprintf("%s.%d.tmp", path, os.Getpid())
	f, err := statefs.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, keyMode)
	if err != nil {
		return err
	}
	_, err = f.WriteString(k.String() + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		if replace {
			err = os.Rename(tmp, path)
		} else if err = os.Link(tmp, path); err == nil || errors.Is(err, fs.ErrExist) {
			_ = os.Remove(tmp)
			return err
		}
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("storing the private key %s: %w", path, err)
	}
	return nil
}
