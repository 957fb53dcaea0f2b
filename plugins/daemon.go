package plugins

import (
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// What moor's long-running commands share (`moor-dns serve`, `moor-overlay agent`):
// their log and their command-line flags. A plugin call logs through the Call's logger
// (log.go) instead.

// DaemonLogger is the logger of a long-running moor process (the DNS sidecar, the overlay
// agent): a text log appended to path (0600, its directory 0700; "stderr" for stderr, and
// stderr when the file cannot be opened) at level (debug, info, warn, error), tagged with
// the component and the pid. Call the returned function at exit.
func DaemonLogger(path, level, component string) (*slog.Logger, func()) {
	var w io.Writer = os.Stderr
	closeFn := func() {}
	if path != "stderr" {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err == nil {
			if f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW, 0o600); err == nil {
				w = f
				closeFn = func() { f.Close() }
			}
		}
	}
	h := slog.NewTextHandler(w, &slog.HandlerOptions{Level: parseLevel(level)})
	return slog.New(h).With("component", component, "pid", os.Getpid()), closeFn
}

// StringList is a repeatable command-line flag.
type StringList []string

func (s *StringList) String() string     { return strings.Join(*s, ",") }
func (s *StringList) Set(v string) error { *s = append(*s, v); return nil }

// DaemonFlags are the logging flags of moor's long-running commands.
type DaemonFlags struct{ LogFile, LogLevel string }

// Register adds --log-file (default defaultFile) and --log-level to fs.
func (d *DaemonFlags) Register(fs *flag.FlagSet, defaultFile string) {
	fs.StringVar(&d.LogFile, "log-file", defaultFile, `log file ("stderr" for stderr)`)
	fs.StringVar(&d.LogLevel, "log-level", "info", "debug, info, warn or error")
}

// Logger opens the logger the flags name (see DaemonLogger).
func (d *DaemonFlags) Logger(component string) (*slog.Logger, func()) {
	return DaemonLogger(d.LogFile, d.LogLevel, component)
}
