package runtimes

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// runtimeHostPaths are directories the runtimes create on the host whatever their
// configuration says: containerd 1.6's shim sockets (/run/containerd/s, a compiled-in
// path), runc's default root (podman runs runc without --root), podman's blob-info cache
// (/var/lib/containers/cache) and libcni's result cache (/var/lib/cni: podman 4, ctr and
// cnitool have no setting for it).
var runtimeHostPaths = []string{"/run/containerd", "/run/runc", "/var/lib/containers", "/var/lib/cni"}

// disposableFiles are the only files a created runtime directory may hold for the guard
// to remove it: a cache podman rebuilds on demand.
var disposableFiles = map[string]bool{"blob-info-cache-v1.boltdb": true}

// hostPathGuard remembers which runtimeHostPaths were missing before the tests.
type hostPathGuard struct{ missing []string }

func guardHostPaths() hostPathGuard {
	var g hostPathGuard
	for _, p := range runtimeHostPaths {
		if _, err := os.Lstat(p); os.IsNotExist(err) {
			g.missing = append(g.missing, p)
		}
	}
	return g
}

// restore removes the directories the tests' runtimes created, when they hold nothing
// but directories and disposable caches; anything else is left and reported on w.
func (g hostPathGuard) restore(w io.Writer) {
	for _, p := range g.missing {
		if _, err := os.Lstat(p); err != nil {
			continue
		}
		var kept []string
		_ = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() && !disposableFiles[d.Name()] {
				kept = append(kept, path)
			}
			return nil
		})
		if len(kept) > 0 {
			fmt.Fprintf(w, "runtime tests: left %s (created by the runtimes) because it holds %v\n", p, kept)
			continue
		}
		if err := os.RemoveAll(p); err != nil {
			fmt.Fprintf(w, "runtime tests: removing %s: %v\n", p, err)
		}
	}
}
