package records_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/moornet/moor/dns/records"
	"github.com/moornet/moor/dns/records/recordstest"
)

func newLocal(t *testing.T) *records.Local {
	t.Helper()
	s, err := records.NewLocal(filepath.Join(t.TempDir(), "dns"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestLocalContract(t *testing.T) {
	recordstest.Run(t, func(t *testing.T) records.Store { return newLocal(t) })
}

// newLocalWithRecord is a store holding network "a" and one record on it.
func newLocalWithRecord(t *testing.T) (*records.Local, context.Context) {
	t.Helper()
	s := newLocal(t)
	ctx := context.Background()
	if err := s.PutNetwork(ctx, recordstest.Net("a")); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, recordstest.Rec("a", "abc123", "10.88.0.2", "web")); err != nil {
		t.Fatal(err)
	}
	return s, ctx
}

func TestLocalLayoutAndModes(t *testing.T) {
	s, _ := newLocalWithRecord(t)
	dir := filepath.Join(s.Root(), "a")
	checks := []struct {
		path string
		mode os.FileMode
	}{
		{dir, os.ModeDir | os.ModeSetgid | 0o750},
		{filepath.Join(dir, "network.json"), 0o640},
		{filepath.Join(dir, "abc123.eth0.json"), 0o640},
		{filepath.Join(dir, ".names"), 0o640},
	}
	for _, c := range checks {
		st, err := os.Stat(c.path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode() != c.mode {
			t.Errorf("%s: mode %v, want %v", c.path, st.Mode(), c.mode)
		}
	}
	data, err := os.ReadFile(filepath.Join(dir, "abc123.eth0.json"))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"version":1,"network":"a","containerID":"abc123","ifName":"eth0","names":["web"],"ips":["10.88.0.2"]}`
	if strings.TrimSpace(string(data)) != want {
		t.Errorf("record file = %s\nwant %s", data, want)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") && e.Name() != ".names" {
			t.Errorf("temp file left behind: %s", e.Name())
		}
	}
}

func TestLocalCorruptFileDoesNotHideOthers(t *testing.T) {
	s := newLocal(t)
	ctx := context.Background()
	if err := s.PutNetwork(ctx, recordstest.Net("a")); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, recordstest.Rec("a", "good", "10.88.0.2", "web")); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(s.Root(), "a", "bad.eth0.json")
	// A name with a space, written behind the store's back, is never returned.
	content := `{"version":1,"network":"a","containerID":"bad","ifName":"eth0","names":["my web"],"ips":["10.88.0.3"]}`
	if err := os.WriteFile(bad, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	rs, err := s.List(ctx, "a")
	var ce *records.CorruptError
	if !errors.As(err, &ce) || ce.Path != bad {
		t.Fatalf("List err = %v, want *CorruptError for %s", err, bad)
	}
	if len(rs) != 1 || rs[0].ContainerID != "good" {
		t.Fatalf("List records = %+v, want only the good one", rs)
	}
}

func TestLocalConflictingFileName(t *testing.T) {
	s := newLocal(t)
	ctx := context.Background()
	if err := s.PutNetwork(ctx, recordstest.Net("a")); err != nil {
		t.Fatal(err)
	}
	r1 := recordstest.Rec("a", "x.y", "10.88.0.2", "one")
	r1.IfName = "z"
	r2 := recordstest.Rec("a", "x", "10.88.0.3", "two")
	r2.IfName = "y.z"
	if err := s.Put(ctx, r1); err != nil {
		t.Fatal(err)
	}
	var ce *records.ConflictError
	if err := s.Put(ctx, r2); !errors.As(err, &ce) {
		t.Fatalf("Put of colliding record: err = %v, want *ConflictError", err)
	}
	// Deleting the other key must not remove r1.
	if err := s.Delete(ctx, "a", "x", "y.z"); err != nil {
		t.Fatal(err)
	}
	rs, _ := s.List(ctx, "a")
	if len(rs) != 1 || rs[0].ContainerID != "x.y" {
		t.Fatalf("records = %+v, want r1 kept", rs)
	}
}

func TestValidName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"web", true},
		{"abcdef123456", true},
		{"pod.ns", true},
		{"Web-1", true},
		{"a", true},
		{strings.Repeat("a", 63), true},
		{strings.Repeat("a", 64), false},
		{strings.Repeat("a.", 126) + "a", true},  // 253 characters
		{strings.Repeat("a.", 127) + "a", false}, // 255 characters
		{"", false},
		{"web.", false},
		{".web", false},
		{"my web", false},
		{"my_web", true},
		{"web-", false},
		{"-web", false},
		{"wéb", false},
	}
	for _, tc := range tests {
		err := records.ValidName(tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("ValidName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
		var ine *records.InvalidNameError
		if err != nil && (!errors.As(err, &ine) || ine.Value != tc.name || ine.CNICode() != 7) {
			t.Errorf("ValidName(%q) error %v does not name the value with code 7", tc.name, err)
		}
	}
}

// GrantRead opens the store to one group, read only, never to others, follows no symlink,
// and what is created afterwards inherits the group.
func TestGrantRead(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to change groups")
	}
	const gid = 4242
	s, ctx := newLocalWithRecord(t)
	outside := filepath.Join(t.TempDir(), "outside")
	if err := os.WriteFile(outside, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(s.Root(), "a", "planted.json")); err != nil {
		t.Fatal(err)
	}
	if err := records.GrantRead(s.Root(), gid); err != nil {
		t.Fatal(err)
	}
	// Created after the grant: inherits the group through the setgid directories.
	if err := s.PutNetwork(ctx, recordstest.Net("b")); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, recordstest.Rec("b", "def456", "10.89.0.2", "db")); err != nil {
		t.Fatal(err)
	}
	dirMode, fileMode := os.ModeDir|os.ModeSetgid|0o750, os.FileMode(0o640)
	for p, mode := range map[string]os.FileMode{
		s.Root():                     dirMode,
		filepath.Join(s.Root(), "a"): dirMode,
		filepath.Join(s.Root(), "a", "network.json"):     fileMode,
		filepath.Join(s.Root(), "a", "abc123.eth0.json"): fileMode,
		filepath.Join(s.Root(), "b"):                     dirMode,
		filepath.Join(s.Root(), "b", "network.json"):     fileMode,
		filepath.Join(s.Root(), "b", "def456.eth0.json"): fileMode,
	} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode() != mode || st.Sys().(*syscall.Stat_t).Gid != gid || st.Sys().(*syscall.Stat_t).Uid != 0 {
			t.Errorf("%s: mode %v gid %d uid %d, want %v, gid %d, owner root", p, st.Mode(), st.Sys().(*syscall.Stat_t).Gid, st.Sys().(*syscall.Stat_t).Uid, mode, gid)
		}
	}
	st, err := os.Stat(outside)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode() != 0o600 || st.Sys().(*syscall.Stat_t).Gid == gid {
		t.Errorf("the symlink's target was changed: mode %v gid %d", st.Mode(), st.Sys().(*syscall.Stat_t).Gid)
	}
}

// An unchanged network is not rewritten (every ADD puts its network: rewriting cost two
// fsyncs), a changed one is, and readers get the new one.
func TestLocalPutNetworkUnchangedKeepsFile(t *testing.T) {
	s, ctx := newLocalWithRecord(t)
	p := filepath.Join(s.Root(), "a", "network.json")
	inode := func() uint64 {
		t.Helper()
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return st.Sys().(*syscall.Stat_t).Ino
	}
	before := inode()
	if err := s.PutNetwork(ctx, recordstest.Net("a")); err != nil {
		t.Fatal(err)
	}
	if got := inode(); got != before {
		t.Fatalf("an unchanged network.json was rewritten (inode %d -> %d)", before, got)
	}
	changed := recordstest.Net("a")
	changed.Domain = "other.moor"
	if err := s.PutNetwork(ctx, changed); err != nil {
		t.Fatal(err)
	}
	if got := inode(); got == before {
		t.Fatal("a changed network.json was not rewritten")
	}
	nets, err := s.Networks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(nets) != 1 || nets[0].Domain != "other.moor" {
		t.Fatalf("networks after the change = %+v", nets)
	}
	// A file that differs only in its trailing bytes is rewritten too.
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, append(data, ' '), 0o640); err != nil {
		t.Fatal(err)
	}
	before = inode()
	if err := s.PutNetwork(ctx, changed); err != nil {
		t.Fatal(err)
	}
	if got := inode(); got == before {
		t.Fatal("a network.json with other bytes was not rewritten")
	}
	entries, _ := os.ReadDir(filepath.Dir(p))
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".tmp") {
			t.Fatalf("temp file %s left", e.Name())
		}
	}
}
