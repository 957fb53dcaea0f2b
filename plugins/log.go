package plugins

import (
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// DefaultLogDir is where plugins log unless the config's logFile or MOOR_LOG_FILE says
// otherwise.
const DefaultLogDir = "/var/log/moor"

// newLogger builds the call's logger. The destination is, in order: MOOR_LOG_FILE, the
// config's logFile, DefaultLogDir/<plugin>.log; "stderr" means the call's stderr. The file
// is opened lazily, on the first record at or above the level, so a quiet call costs
// nothing. Never stdout: it carries the CNI result.
func newLogger(plugin string, call *Call) *slog.Logger {
	var head struct {
		LogFile  string `json:"logFile"`
		LogLevel string `json:"logLevel"`
	}
	_ = json.Unmarshal(call.StdinData, &head) // a bad config is reported by LoadConf with its code
	dest := call.Getenv("MOOR_LOG_FILE")
	if dest == "" {
		dest = head.LogFile
	}
	if dest == "" {
		dest = filepath.Join(DefaultLogDir, plugin+".log")
	}
	level := head.LogLevel
	if env := call.Getenv("MOOR_LOG_LEVEL"); env != "" {
		level = env
	}
	var w io.Writer
	if dest == "stderr" {
		w = call.Stderr
	} else {
		w = &lazyFile{path: dest, fallback: call.Stderr}
	}
	h := slog.NewTextHandler(w, &slog.HandlerOptions{Level: parseLevel(level)})
	return slog.New(h).With("plugin", plugin, "cmd", call.Command, "network", call.NetworkName)
}

func parseLevel(s string) slog.Level {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug
	case "warn", "warning":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// lazyFile opens its file on first write; when it cannot, records go to fallback.
type lazyFile struct {
	path     string
	fallback io.Writer
	once     sync.Once
	w        io.Writer
}

func (l *lazyFile) Write(p []byte) (int, error) {
	l.once.Do(func() {
		l.w = l.fallback
		if err := os.MkdirAll(filepath.Dir(l.path), 0o700); err != nil {
			return
		}
		f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return
		}
		l.w = f // closed by process exit; a plugin process logs a handful of lines
	})
	return l.w.Write(p)
}

// DaemonLogger is the logger of a long-running moor process (the DNS sidecar, the overlay
// agent): a text log appended to path (0600, its directory 0700; "stderr" for stderr, and
// stderr when the file cannot be opened) at level (debug, info, warn, error), tagged with
// the component and the pid. Call the returned function at exit.
func DaemonLogger(path, level, component string) (*slog.Logger, func()) {
	var w io.Writer = os.Stderr
	closeFn := func() {}
	if path != "stderr" {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err == nil {
			if f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600); err == nil {
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
