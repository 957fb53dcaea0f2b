package integration

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// State paths are never followed through a planted symbolic link, and a state directory
// someone else owns or can write is refused: code 7 naming the path, the link's target
// untouched, the host as it was (docs/security.md, "State is for root alone").
func TestSecurityStateSymlinksRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		// plant prepares the trap and returns the path the error must name.
		plant func(t *testing.T, w *dnsWorld, target string) string
	}{
		{"ipam db symlink", func(t *testing.T, w *dnsWorld, target string) string {
			p := filepath.Join(w.dataDir, "symnet.db")
			mustSymlink(t, target, p)
			return p
		}},
		{"ipam lock symlink", func(t *testing.T, w *dnsWorld, target string) string {
			p := filepath.Join(w.dataDir, "symnet.db.lock")
			mustSymlink(t, target, p)
			return p
		}},
		{"foreign dataDir", func(t *testing.T, w *dnsWorld, target string) string {
			if err := os.Chown(w.dataDir, 65534, 65534); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(w.dataDir, 0o777); err != nil {
				t.Fatal(err)
			}
			return w.dataDir
		}},
		{"dns records dir symlink", func(t *testing.T, w *dnsWorld, target string) string {
			records := filepath.Join(w.dir, "records")
			if err := os.Mkdir(records, 0o700); err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(records, "symnet")
			mustSymlink(t, filepath.Dir(target), p)
			return p
		}},
		{"dns pid file symlink", func(t *testing.T, w *dnsWorld, target string) string {
			p := filepath.Join(w.dir, "dns.pid")
			mustSymlink(t, target, p)
			return p
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newDNSWorld(t)
			target := filepath.Join(t.TempDir(), "target")
			if err := os.WriteFile(target, []byte("keep\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			refused := tc.plant(t, w, target)
			dataDirInfo, _ := os.Stat(w.dataDir)
			list := w.network("symnet", "msym0", "10.231.0.0/24", nil)
			before := w.hostLinks()
			ctr := plugintestNetns(t)
			rt := attachment(ctr, "eth0")
			_, err := w.rt.add(list, rt)
			wantCode(t, err, 7, refused)
			// DEL must write the same state: it is refused the same way until the
			// operator removes the trap, then it succeeds and leaves no container link.
			// (moor-dns's DEL does not touch the sidecar's pid file.)
			if !strings.HasSuffix(refused, "dns.pid") {
				wantCode(t, w.rt.del(list, rt), 7, refused)
			}
			if refused != w.dataDir {
				if err := os.Remove(refused); err != nil {
					t.Fatal(err)
				}
			} else {
				if err := os.Chown(w.dataDir, 0, 0); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(w.dataDir, dataDirInfo.Mode().Perm()&0o700); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.rt.del(list, rt); err != nil {
				t.Errorf("DEL once the path is safe: %v", err)
			}
			// The network's bridge may stay (it is the network's, made by the bridge
			// plugin before moor-dns refused); nothing else does.
			after := slices.DeleteFunc(w.hostLinks(), func(n string) bool { return n == "msym0" })
			if !slices.Equal(before, after) {
				t.Errorf("host links %v, want %v", after, before)
			}
			b, err := os.ReadFile(target)
			fi, _ := os.Stat(target)
			if err != nil || string(b) != "keep\n" || fi.Mode().Perm() != 0o644 {
				t.Errorf("target %q mode %v (%v), want it untouched", b, fi.Mode(), err)
			}
			if entries, _ := os.ReadDir(filepath.Dir(target)); len(entries) != 1 {
				t.Errorf("files written next to the target: %v", entries)
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
