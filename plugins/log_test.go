package plugins_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moornet/moor/plugins"
)

func TestDaemonLoggerWritesPrivateFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "d.log")
	log, closeLog := plugins.DaemonLogger(path, "warn", "moor-test")
	log.Info("dropped below the level")
	log.Warn("kept", "k", "v")
	closeLog()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if s := string(data); !strings.Contains(s, "kept") || !strings.Contains(s, "component=moor-test") || strings.Contains(s, "dropped") {
		t.Errorf("log file:\n%s", s)
	}
	for p, want := range map[string]os.FileMode{path: 0o600, filepath.Dir(path): 0o700} {
		if info, err := os.Stat(p); err != nil || info.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v (%v)", p, info.Mode().Perm(), want, err)
		}
	}
}
