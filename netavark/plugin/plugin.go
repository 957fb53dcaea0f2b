// Package plugin is moor-netavark: a netavark external plugin (netavark 1.6 and later,
// podman 5 and later) that serves netavark networks with moor's CNI plugins. It reads
// netavark's commands (package api), translates them (package translate) and runs
// moor-bridge or moor-macvlan, moor-ipam and moor-dns through libcni, as any CNI runtime
// does: ADD on setup, DEL on teardown, with libcni's result cache.
//
// Where things are (each can be moved by the environment, which netavark passes on from
// podman):
//
//	moor's CNI plugins   $CNI_PATH, else the directory of the moor-netavark binary
//	                     (links followed) and /opt/cni/bin
//	state                $MOOR_RUN_DIR/netavark, else /run/moor/netavark: libcni's result
//	                     cache (cache/), the per-network locks (locks/), the network last
//	                     seen under each name (networks/, see adopt) and moor-ipam's
//	                     store (ipam/, unless ipam_options.dataDir names one)
//	DNS records, socket  as moor-dns finds them for the namespace the plugin runs in
//	                     (server.PathsOf: /run/moor/dns and dns.sock in the machine's,
//	                     /run/moor/netns/<dev>-<ino>/ in any other; under $MOOR_RUN_DIR)
//	podman's networks    $MOOR_NETAVARK_NETWORK_DIR, else /etc/containers/networks: the
//	                     subnets create must not take again
//
// Design notes:
//   - state lives on tmpfs, as podman's own IPAM database (/run/containers/networks) and
//     the containers' namespaces do: after a reboot no attachment is left to hold an
//     address;
//   - setup and teardown of one network hold a lock on it (podman serialises its own
//     network calls, but other callers of netavark or of the plugin need not);
//   - a failed setup runs DEL before it reports the error (libcni does not undo the
//     plugins that succeeded), so that nothing of it stays;
//   - a network is identified by its ID: state left by an earlier network of the same
//     name is removed when create or setup first sees the new ID (identity.go);
//   - the last container out takes the network with it: when teardown leaves the bridge
//     without ports, the network's firewall rules, its DNS network entry and the bridge
//     go, as netavark's own bridge driver does. Podman removes a plugin's network without
//     calling the plugin, so nothing else would remove them;
//   - every failure is {"error": "<message>"} on stdout and exit status 1; CNI errors keep
//     their code in the message ("(CNI code 7)", see docs/errors.md).
//
// What it does not do: netavark's update, dhcp-proxy and firewall-reload commands (they
// are netavark's own, not plugin commands), static routes, or networks of other drivers.
package plugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/moornet/moor/dns/records"
	"github.com/moornet/moor/dns/server"
	"github.com/moornet/moor/netavark/api"
	"github.com/moornet/moor/plugins"
)

// Environment variables and defaults.
const (
	EnvCNIPath    = "CNI_PATH"
	EnvRunDir     = "MOOR_RUN_DIR" // as moor-dns reads it
	EnvNetworkDir = "MOOR_NETAVARK_NETWORK_DIR"

	DefaultCNIDir     = "/opt/cni/bin"
	DefaultRunDir     = "/run/moor"
	DefaultNetworkDir = "/etc/containers/networks"
	stateSubdir       = "netavark"

	// Timeout bounds one libcni operation (ADD or DEL of the whole list).
	Timeout = 2 * time.Minute
	// LockTimeout bounds the wait for another setup or teardown of the same network.
	LockTimeout = time.Minute
)

// Config is where moor-netavark finds the plugins and keeps its state.
type Config struct {
	CNIPath    []string
	StateDir   string // cache/, locks/, ipam/
	DNSDir     string // moor-dns's record store
	DNSSocket  string // the DNS sidecar's control socket
	NetworkDir string // podman's network files
}

// ConfigFromEnv reads the environment; exe is the plugin binary's path.
func ConfigFromEnv(getenv func(string) string, exe string) Config {
	c := Config{
		CNIPath:    filepath.SplitList(getenv(EnvCNIPath)),
		StateDir:   filepath.Join(DefaultRunDir, stateSubdir),
		DNSDir:     records.DefaultRoot,
		DNSSocket:  server.DefaultControlSocket,
		NetworkDir: DefaultNetworkDir,
	}
	if len(c.CNIPath) == 0 {
		if real, err := filepath.EvalSymlinks(exe); err == nil {
			c.CNIPath = append(c.CNIPath, filepath.Dir(real))
		}
		c.CNIPath = append(c.CNIPath, DefaultCNIDir)
	}
	if dir := getenv(EnvRunDir); dir != "" {
		c.StateDir = filepath.Join(dir, stateSubdir)
	}
	if p, _, err := server.PathsOf(getenv(EnvRunDir)); err == nil {
		c.DNSDir, c.DNSSocket = p.StoreDir, p.ControlSocket
	}
	if dir := getenv(EnvNetworkDir); dir != "" {
		c.NetworkDir = dir
	}
	return c
}

func (c Config) cacheDir() string { return filepath.Join(c.StateDir, "cache") }
func (c Config) ipamDir() string  { return filepath.Join(c.StateDir, "ipam") }
func (c Config) lockFile(network string) string {
	return filepath.Join(c.StateDir, "locks", network+".lock")
}

// Stdio is one invocation: arguments after the program name, and the standard streams.
type Stdio struct {
	Args   []string
	Stdin  io.Reader
	Stdout io.Writer
	Getenv func(string) string
	// Exe is the path of the running binary (os.Executable).
	Exe string
}

// UsageError: the command line is wrong.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// Main runs one command and returns the exit status: 0, or 1 after writing the error
// object to stdout.
func Main(s Stdio) int {
	if err := run(s); err != nil {
		out, _ := json.Marshal(api.Error{Error: message(err)})
		fmt.Fprintln(s.Stdout, string(out))
		return 1
	}
	return 0
}

func run(s Stdio) error {
	cfg := ConfigFromEnv(s.Getenv, s.Exe)
	cmd := "info"
	if len(s.Args) > 0 {
		cmd = s.Args[0]
	}
	switch cmd {
	case "info":
		return writeJSON(s.Stdout, Info())
	case "create":
		var n api.Network
		if err := readJSON(s.Stdin, &n); err != nil {
			return err
		}
		out, err := Create(cfg, n)
		if err != nil {
			return err
		}
		return writeJSON(s.Stdout, out)
	case "setup", "teardown":
		if len(s.Args) != 2 || s.Args[1] == "" {
			return &UsageError{Msg: cmd + ": want exactly one argument, the container's network namespace path"}
		}
		var x api.Exec
		if err := readJSON(s.Stdin, &x); err != nil {
			return err
		}
		if cmd == "teardown" {
			return Teardown(cfg, s.Args[1], x)
		}
		st, err := Setup(cfg, s.Args[1], x)
		if err != nil {
			return err
		}
		return writeJSON(s.Stdout, st)
	default:
		return &UsageError{Msg: fmt.Sprintf("unknown command %q: want create, setup, teardown or info", cmd)}
	}
}

// Name is the binary's name.
const Name = "moor-netavark"

// Info is the info command's answer (also without a command, as netavark's plugins do).
// Its "about" field is the line every moor binary prints about itself ("<name>: moor
// <version>"), by which scripts/install.sh knows a binary as moor's.
func Info() api.Info {
	return api.Info{Version: plugins.Version, APIVersion: api.Version, Extra: map[string]string{
		"about":       plugins.About(Name),
		"description": "moor's CNI drivers for netavark: moor-bridge (also as moor-netavark) and moor-macvlan, with moor-ipam and moor-dns",
	}}
}

func readJSON(r io.Reader, v any) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("reading stdin: %w", err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("stdin is not the JSON netavark sends: %w", err)
	}
	return nil
}

func writeJSON(w io.Writer, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(data))
	return err
}

// message is the error text for netavark: a CNI error keeps its code.
func message(err error) string {
	var cniErr *types.Error
	if errors.As(err, &cniErr) {
		return fmt.Sprintf("%s (CNI code %d)", err.Error(), cniErr.Code)
	}
	return err.Error()
}

// exePath is os.Executable, or argv[0] when the kernel does not say.
func exePath() string {
	if p, err := os.Executable(); err == nil {
		return p
	}
	return os.Args[0]
}

// Run is main: the process's own streams and environment.
func Run() int {
	return Main(Stdio{Args: os.Args[1:], Stdin: os.Stdin, Stdout: os.Stdout, Getenv: os.Getenv, Exe: exePath()})
}
