package local_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/moornet/moor/ipam/store"
	"github.com/moornet/moor/ipam/store/storetest"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/statefs"
)

// TestUnsafePathsRefused plants what a user who could write the data directory would:
// a link at the database or at its lock, or the directory itself owned by someone else
// and open to all. Every write is refused with code 7 naming the path, and the link's
// target keeps its content and mode.
func TestUnsafePathsRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown")
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		plant func(t *testing.T, dir, db, target string) (refused string)
	}{
		{"db symlink", func(t *testing.T, dir, db, target string) string {
			mustSymlink(t, target, db)
			return db
		}},
		{"lock symlink", func(t *testing.T, dir, db, target string) string {
			mustSymlink(t, target, db+".lock")
			return db + ".lock"
		}},
		{"foreign dataDir", func(t *testing.T, dir, db, target string) string {
			if err := os.Chown(dir, 65534, 65534); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, 0o777); err != nil {
				t.Fatal(err)
			}
			return dir
		}},
		{"dataDir symlink", func(t *testing.T, dir, db, target string) string {
			if err := os.Remove(dir); err != nil {
				t.Fatal(err)
			}
			mustSymlink(t, t.TempDir(), dir)
			return dir
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "ipam")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			db := filepath.Join(dir, "net1.db")
			target := filepath.Join(t.TempDir(), "target")
			if err := os.WriteFile(target, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			refused := tc.plant(t, dir, db, target)
			st := open(t, db, 0)
			_, err := st.Allocate(ctx, store.AllocRequest{Attachment: store.Attachment{Key: storetest.Key("c1")},
				Pools: []store.Pool{storetest.Pool("10.0.0.0/24")}})
			var unsafe *statefs.UnsafeError
			if !errors.As(err, &unsafe) || unsafe.Path != refused {
				t.Fatalf("Allocate = %v, want an unsafe-path error naming %s", err, refused)
			}
			if ce := plugins.ToCNIError(err); ce.Code != 7 {
				t.Fatalf("code %d (%s), want 7", ce.Code, ce.Msg)
			}
			if err := st.Status(ctx); !errors.As(err, &unsafe) {
				t.Fatalf("Status = %v, want the unsafe-path error", err)
			}
			fi, err := os.Stat(target)
			if err != nil || fi.Size() != 0 || fi.Mode().Perm() != 0o644 {
				t.Fatalf("target changed: %v %v", fi, err)
			}
		})
	}
}

func mustSymlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}
