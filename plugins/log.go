package plugins

import (
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
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
		f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
		if err != nil {
			return
		}
		l.w = f // closed by process exit; a plugin process logs a handful of lines
	})
	return l.w.Write(p)
}
