package statefs

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/moornet/moor/plugins/codes"
)

// unsafePath asserts err is an *UnsafeError naming path, with code 7.
func unsafePath(t *testing.T, err error, path string) {
	t.Helper()
	var ue *UnsafeError
	if !errors.As(err, &ue) {
		t.Fatalf("error = %v, want an *UnsafeError", err)
	}
	if ue.Path != path || ue.CNICode() != codes.InvalidNetworkConfig {
		t.Fatalf("refused %q with code %d, want %q with code 7", ue.Path, ue.CNICode(), path)
	}
}

func requireRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown")
	}
}

func TestOpenFileRefusesSymlink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(t.TempDir(), "target")
	if err := os.WriteFile(target, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "net.db")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	for _, flag := range []int{os.O_RDONLY, os.O_RDWR | os.O_CREATE, os.O_RDWR | os.O_CREATE | os.O_TRUNC} {
		f, err := OpenFile(link, flag, 0o600)
		if err == nil {
			f.Close()
		}
		unsafePath(t, err, link)
	}
	if b, err := os.ReadFile(target); err != nil || string(b) != "keep" {
		t.Fatalf("target = %q, %v; want it untouched", b, err)
	}
	if fi, _ := os.Stat(target); fi.Mode().Perm() != 0o644 {
		t.Fatalf("target mode %v changed", fi.Mode())
	}
}

func TestOpenFileCreatesRegular(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a", "b.lock")
	if err := MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	f, err := OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if fi, err := os.Lstat(path); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
		t.Fatalf("lstat = %v, %v", fi, err)
	}
}

func TestDirRules(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	mk := func(name string, mode os.FileMode, uid int) string {
		p := filepath.Join(base, name)
		if err := os.Mkdir(p, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // past the umask
			t.Fatal(err)
		}
		if err := os.Chown(p, uid, uid); err != nil {
			t.Fatal(err)
		}
		return p
	}
	foreign := mk("foreign", 0o777, 65534)
	foreign700 := mk("foreign700", 0o700, 65534)
	worldw := mk("worldw", 0o777, 0)
	groupw := mk("groupw", 0o770, 0)
	sticky := mk("sticky", 0o777|os.ModeSticky, 0)
	ok := mk("ok", 0o755, 0)
	target := mk("target", 0o700, 0)
	link := filepath.Join(base, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	inSticky := filepath.Join(sticky, "state")
	inWorld := filepath.Join(worldw, "state")
	for _, tc := range []struct {
		dir, refused string
	}{
		{foreign, foreign},
		{foreign700, foreign700},
		{worldw, worldw},
		{groupw, groupw},
		{sticky, sticky}, // a state directory itself may not be shared, sticky or not
		{link, link},
		{inWorld, worldw}, // an ancestor others can rename entries in
		{inSticky, ""},    // a sticky ancestor is fine (like /tmp)
		{ok, ""},
		{filepath.Join(ok, "x", "y"), ""},
	} {
		err := MkdirAll(tc.dir, 0o700)
		if tc.refused == "" {
			if err != nil {
				t.Errorf("MkdirAll(%s) = %v, want nil", tc.dir, err)
			}
			continue
		}
		unsafePath(t, err, tc.refused)
		// A file in a refused directory is refused before it is opened.
		f, err := OpenFile(filepath.Join(tc.dir, "f"), os.O_RDWR|os.O_CREATE, 0o600)
		if err == nil {
			f.Close()
		}
		unsafePath(t, err, tc.refused)
	}
	if entries, _ := os.ReadDir(target); len(entries) != 0 {
		t.Fatalf("a file was created through the directory link: %v", entries)
	}
}

func TestOpenFileRefusesForeignFile(t *testing.T) {
	requireRoot(t)
	path := filepath.Join(t.TempDir(), "dns.pid")
	if err := os.WriteFile(path, []byte("1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	f, err := OpenFile(path, os.O_RDWR, 0)
	if err == nil {
		f.Close()
	}
	unsafePath(t, err, path)
}

// A verdict of CheckDir is reused only for a safe directory and only for checkedFor: a
// directory made unsafe later is refused once that has passed, and a refused one stays
// refused.
func TestCheckDirVerdictExpires(t *testing.T) {
	requireRoot(t)
	dir := filepath.Join(t.TempDir(), "state")
	if err := MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	time.Sleep(checkedFor + 100*time.Millisecond)
	unsafePath(t, CheckDir(dir), dir)
	unsafePath(t, CheckDir(dir), dir)
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := CheckDir(dir); err != nil {
		t.Fatalf("CheckDir of the repaired directory: %v", err)
	}
}
