package plugins

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/resultjson"
)

// MaxStdin bounds the config a plugin accepts on stdin. Real configs with a prevResult are a
// few KiB; anything near this bound is a mistake or an attack.
const MaxStdin = 4 << 20

// maxContainerIDLen bounds CNI_CONTAINERID; it ends up in file names and rule comments.
const maxContainerIDLen = 256

// maxNetworkNameLen bounds the network name; it ends up in file, chain and set names.
const maxNetworkNameLen = 128

// Plugin is one moor binary: its name and the handler of each verb. VERSION is answered
// by the framework. A nil handler is a programming error: every moor plugin implements
// every verb.
type Plugin struct {
	Name   string
	Add    func(*Call) error
	Del    func(*Call) error
	Check  func(*Call) error
	GC     func(*Call) error
	Status func(*Call) error
}

// Env is everything one invocation reads and writes. Main fills it from the process;
// tests fill it themselves, so several invocations can run in parallel in one process.
type Env struct {
	Getenv func(string) string
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
}

// Call is one verb invocation as a handler sees it.
type Call struct {
	Plugin      string // the binary's name, e.g. moor-bridge
	Command     string // ADD, DEL, CHECK, GC or STATUS
	ContainerID string
	Netns       string // may be empty on DEL
	IfName      string
	Args        string // raw CNI_ARGS
	Path        string // CNI_PATH
	StdinData   []byte // the config as received
	CNIVersion  string // the config's cniVersion; results are printed in it
	NetworkName string

	Getenv func(string) string
	Stdout io.Writer
	Stderr io.Writer
	Log    *slog.Logger

	loaded     *NetConf // what LoadConf loaded (see Conf)
	loadedFrom []byte   // the StdinData it was loaded from
}

// Main runs the plugin as a process: it pins main to its OS thread, runs the verb, prints
// a CNI error on failure and exits non-zero.
//
// It leaves GOMAXPROCS at the runtime's default. Main used to drop to one processor
// (runtime.GOMAXPROCS(1)) to save thread hand-offs, but the call stops the world while the
// runtime's second processor is still starting its thread, and measured side by side on
// the same binaries (libcni-driven bench and 120 interleaved execs, both orders) an ADD
// was slower with it: moor-bridge ADD CPU 0.62-0.64x the reference with it, 0.52-0.55x
// without; moor-none ADD p50 1.00-1.14x with it, 0.88-0.92x without; VERSION about 0.3 ms
// slower with it.
func Main(p Plugin) {
	runtime.LockOSThread()
	env := Env{Getenv: os.Getenv, Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}
	if err := p.Run(env); err != nil {
		_ = json.NewEncoder(os.Stdout).Encode(err)
		os.Exit(1)
	}
}

// Run dispatches one invocation described by env and returns the CNI error to print, or
// nil on success (the result, if any, has been written to env.Stdout).
func (p Plugin) Run(env Env) *types.Error {
	cmd := env.Getenv("CNI_COMMAND")
	if cmd == "" {
		fmt.Fprintf(env.Stderr, "%s\nCNI protocol versions supported: %s\n", About(p.Name), strings.Join(SupportedVersions, ", "))
		return nil
	}
	if cmd == "VERSION" {
		if err := pluginInfo.Encode(env.Stdout); err != nil {
			return types.NewError(codes.IOFailure, err.Error(), "")
		}
		return nil
	}
	handler := p.handler(cmd)
	if handler == nil {
		return types.NewError(codes.InvalidEnvironment, fmt.Sprintf("CNI_COMMAND %q: unknown command", cmd), "")
	}
	call, cerr := newCall(p.Name, cmd, env)
	if cerr != nil {
		return cerr
	}
	call.Log = newLogger(p.Name, call)
	err := handler(call)
	if err != nil {
		call.Log.Error(cmd+" failed", "container", call.ContainerID, "ifname", call.IfName, "err", err)
	}
	return ToCNIError(err)
}

func (p Plugin) handler(cmd string) func(*Call) error {
	switch cmd {
	case "ADD":
		return p.Add
	case "DEL":
		return p.Del
	case "CHECK":
		return p.Check
	case "GC":
		return p.GC
	case "STATUS":
		return p.Status
	}
	return nil
}

// requiredEnv lists the CNI_* variables each verb needs (SPEC "Parameters"). CNI_PATH is
// needed only to exec a delegated IPAM plugin, so it is checked there.
var requiredEnv = map[string][]string{
	"ADD":   {"CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"},
	"CHECK": {"CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"},
	"DEL":   {"CNI_CONTAINERID", "CNI_IFNAME"},
}

func newCall(plugin, cmd string, env Env) (*Call, *types.Error) {
	var missing []string
	for _, name := range requiredEnv[cmd] {
		if env.Getenv(name) == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return nil, types.NewError(codes.InvalidEnvironment, fmt.Sprintf("required environment variables missing: %s", strings.Join(missing, ", ")), "")
	}
	call := &Call{
		Plugin:      plugin,
		Command:     cmd,
		ContainerID: env.Getenv("CNI_CONTAINERID"),
		Netns:       env.Getenv("CNI_NETNS"),
		IfName:      env.Getenv("CNI_IFNAME"),
		Args:        env.Getenv("CNI_ARGS"),
		Path:        env.Getenv("CNI_PATH"),
		Getenv:      env.Getenv,
		Stdout:      env.Stdout,
		Stderr:      env.Stderr,
	}
	if err := validateIdentity(call); err != nil {
		return nil, ToCNIError(err)
	}
	data, err := io.ReadAll(io.LimitReader(env.Stdin, MaxStdin+1))
	if err != nil {
		return nil, types.NewError(codes.IOFailure, fmt.Sprintf("reading the config from stdin: %v", err), "")
	}
	if len(data) > MaxStdin {
		return nil, types.NewError(codes.IOFailure, fmt.Sprintf("config on stdin is larger than %d bytes", MaxStdin), "")
	}
	call.StdinData = data
	if err := call.checkVersion(); err != nil {
		return nil, ToCNIError(err)
	}
	return call, nil
}

// validateIdentity makes sure no value from the environment can escape a state directory
// or break a rule comment: container ID and ifname are checked as the spec defines them,
// plus a length bound.
func validateIdentity(c *Call) error {
	if c.ContainerID != "" {
		if len(c.ContainerID) > maxContainerIDLen {
			return InvalidEnv(fmt.Sprintf("CNI_CONTAINERID is %d characters long, more than %d", len(c.ContainerID), maxContainerIDLen))
		}
		if !SpecName(c.ContainerID) {
			return InvalidEnv(fmt.Sprintf("CNI_CONTAINERID %q: must start with a letter or digit and contain only letters, digits, '_', '.' and '-'", c.ContainerID))
		}
	}
	if c.IfName != "" {
		if err := ValidIfName(c.IfName); err != nil {
			return InvalidEnv(fmt.Sprintf("CNI_IFNAME %q: %s", c.IfName, err))
		}
	}
	return nil
}

// ValidIfName is the one rule for a container interface name in every moor plugin:
// the spec's (1-15 bytes, not "." or "..", no '/', ':' or white space), and further
// only letters, digits, '_', '-' and '.', not starting with '.' or '-'. The name becomes
// a file name, a store key, a rule comment and a netlink attribute: quotes, '=', '\',
// ';' or control characters would garble one of them, and a leading '.' or '-' reads as
// a hidden file or an option.
func ValidIfName(name string) error {
	if err := SpecIfName(name); err != nil {
		return err
	}
	if name[0] == '.' || name[0] == '-' {
		return errors.New("starts with '.' or '-'")
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.') {
			return fmt.Errorf("character %q is not a letter, digit, '_', '-' or '.'", r)
		}
	}
	return nil
}

// checkVersion decodes cniVersion and name from the config, and refuses versions moor does
// not speak and verbs the config's version does not have.
func (c *Call) checkVersion() error {
	var head struct {
		CNIVersion string `json:"cniVersion"`
		Name       string `json:"name"`
	}
	if err := json.Unmarshal(c.StdinData, &head); err != nil {
		return decodeError(err)
	}
	if head.CNIVersion == "" {
		return codes.New(codes.IncompatibleCNIVersion, fmt.Sprintf("cniVersion is missing; moor supports %s", strings.Join(SupportedVersions, ", ")))
	}
	if !slices.Contains(SupportedVersions, head.CNIVersion) {
		return codes.New(codes.IncompatibleCNIVersion, fmt.Sprintf("cniVersion %q is not supported; moor supports %s", head.CNIVersion, strings.Join(SupportedVersions, ", ")))
	}
	if min, ok := minimumVersion[c.Command]; ok {
		if ok, _ := version.GreaterThanOrEqualTo(head.CNIVersion, min); !ok {
			return codes.New(codes.IncompatibleCNIVersion, fmt.Sprintf("%s needs cniVersion %s or later, the config has %q", c.Command, min, head.CNIVersion))
		}
	}
	if err := ValidateNetworkName(head.Name); err != nil {
		return err
	}
	c.CNIVersion = head.CNIVersion
	c.NetworkName = head.Name
	return nil
}

// ValidateNetworkName checks a network name the way the spec defines it, with a length
// bound: it becomes part of file names, chain names and set names.
func ValidateNetworkName(name string) error {
	if name == "" {
		return InvalidField("name", name, "a network name is required")
	}
	if len(name) > maxNetworkNameLen {
		return InvalidField("name", name, fmt.Sprintf("longer than %d characters", maxNetworkNameLen))
	}
	if !SpecName(name) {
		return InvalidField("name", name, "must start with a letter or digit and contain only letters, digits, '_', '.' and '-'")
	}
	return nil
}

// decodeError classifies a JSON error: a value of the wrong type names the field (code 7),
// anything else is content that cannot be decoded (code 6).
func decodeError(err error) error {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		field := typeErr.Field
		if field == "" {
			field = "config"
		}
		return codes.New(codes.InvalidNetworkConfig, fmt.Sprintf("%s: wrong type: got a JSON %s, want %s", field, typeErr.Value, typeErr.Type))
	}
	return codes.Wrap(codes.DecodingFailure, "decoding the network config", err)
}

// PrintResult writes result to the call's stdout, converted to the config's cniVersion.
func (c *Call) PrintResult(result types.Result) error {
	converted, err := result.GetAsVersion(c.CNIVersion)
	if err != nil {
		return codes.Wrap(codes.IncompatibleCNIVersion, fmt.Sprintf("converting the result to cniVersion %s", c.CNIVersion), err)
	}
	// A 1.x result is written by resultjson (the same bytes, without encoding/json's
	// reflection); 0.x results and what it declines go through the library.
	if r, ok := converted.(*current.Result); ok {
		if out, ok := resultjson.Append(nil, r); ok {
			_, err := c.Stdout.Write(out)
			return err
		}
	}
	return converted.PrintTo(c.Stdout)
}
