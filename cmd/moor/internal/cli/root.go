// Package cli is the `moor` command line: Docker's view of the moor networks of a CNI
// runtime (network ls/inspect/create/rm/prune/connect/disconnect) and `moor doctor`.
//
// Exit codes: 0 success, 1 error, 2 usage (unknown command or flag, wrong arguments, a flag
// value that cannot work), 3 `moor doctor` found problems. Errors go to stderr, results to
// stdout.
//
// Global flags point the CLI at a runtime's world: --conf-dir (MOOR_CONF_DIR, default
// /etc/cni/net.d), --cni-path (CNI_PATH, default /opt/cni/bin), --cache-dir (libcni's
// result cache, default /var/lib/cni), --dns-dir and --dns-socket (the DNS sidecar's record
// store and control socket; by default those of the host namespace's sidecar, found as
// moor-dns finds them, under MOOR_RUN_DIR when that is set; a network's moor-dns entry may
// name its own), and --netns, a network namespace in which every
// kernel-facing step runs (netlink, firewall, sysctls, and the plugins libcni execs):
// tests point it at a namespace they made.
//
// What it does not do: keep state of its own. Everything it shows is read from the config
// files, the stores and the kernel at each run.
package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/spf13/cobra"

	"github.com/moornet/moor/cmd/moor/internal/cnirt"
	"github.com/moornet/moor/conflist"
	"github.com/moornet/moor/dns/records"
	"github.com/moornet/moor/dns/server"
	"github.com/moornet/moor/lab"
	"github.com/moornet/moor/plugins"
)

// Exit codes.
const (
	ExitOK       = 0
	ExitError    = 1
	ExitUsage    = 2
	ExitProblems = 3
)

// Environment variables read for global flags that are not given.
const (
	EnvConfDir = "MOOR_CONF_DIR"
	EnvCNIPath = "CNI_PATH"
	// EnvRunDir moves the DNS sidecar's default paths under <dir>, as moor-dns does with
	// the same variable (labs, tests: several "hosts" on one machine).
	EnvRunDir = server.RunDirEnv
)

// usageError is a wrong invocation (exit 2).
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return &usageError{fmt.Errorf(format, args...)} }

// problemsError: doctor found problems (exit 3).
type problemsError struct{ n int }

func (e *problemsError) Error() string { return fmt.Sprintf("%d problem(s) found", e.n) }

// globals are the persistent flags.
type globals struct {
	confDir   string
	cniPath   string
	cacheDir  string
	netns     string
	dnsDir    string
	dnsSocket string
	runDir    string // EnvRunDir
}

// Main runs the CLI with args (without the program name) and returns the exit code.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := New()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteC()
	if err == nil {
		return ExitOK
	}
	code := exitCode(err)
	if code == ExitProblems {
		return code // doctor printed its report
	}
	fmt.Fprintf(stderr, "moor: %v\n", err)
	if code == ExitUsage && cmd != nil {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
	return code
}

func exitCode(err error) int {
	var ue *usageError
	var pe *problemsError
	switch {
	case errors.As(err, &pe):
		return ExitProblems
	case errors.As(err, &ue), strings.HasPrefix(err.Error(), "unknown command"),
		strings.HasPrefix(err.Error(), "unknown flag"), strings.HasPrefix(err.Error(), "unknown shorthand flag"):
		return ExitUsage
	default:
		return ExitError
	}
}

// New builds the command tree.
func New() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "moor",
		Short: "Docker's view of the moor CNI networks of a runtime",
		Long: `moor lists, inspects, creates and removes the moor networks of a CNI runtime (the config
lists in its config directory whose first plugin is a moor plugin), attaches network
namespaces to them as a runtime would, and checks that the kernel still matches the configs.

Exit codes: 0 success, 1 error, 2 usage error, 3 ` + "`moor doctor`" + ` found problems.`,
		Example: `  moor network ls
  moor network create --subnet 10.90.0.0/24 web
  moor network inspect web
  moor --conf-dir /etc/cni/net.d --cni-path /opt/cni/bin doctor`,
		Version:       plugins.Version,
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          usageArgs(cobra.NoArgs),
		RunE:          func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&g.confDir, "conf-dir", conflist.DefaultConfDir, "the runtime's CNI config directory (env "+EnvConfDir+")")
	pf.StringVar(&g.cniPath, "cni-path", cnirt.DefaultCNIPath, "where the CNI plugins are, ':'-separated (env "+EnvCNIPath+")")
	pf.StringVar(&g.cacheDir, "cache-dir", libcni.CacheDir, "libcni's result cache directory")
	pf.StringVar(&g.netns, "netns", "", "run every kernel-facing step in this network namespace (path) instead of the current one")
	pf.StringVar(&g.dnsDir, "dns-dir", "", "the DNS sidecar's record store (default: the host namespace's, "+records.DefaultRoot+" in the machine's; env "+EnvRunDir+" moves it under <dir>)")
	pf.StringVar(&g.dnsSocket, "dns-socket", "", "the DNS sidecar's control socket (default: the host namespace's, "+server.DefaultControlSocket+" in the machine's; env "+EnvRunDir+" moves it under <dir>)")
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		g.fromEnv(cmd)
		return nil
	}
	root.AddCommand(networkCmd(g), doctorCmd(g), lab.Command(), versionCmd(), gendocsCmd(root))
	return root
}

// fromEnv applies the environment to global flags that were not given.
func (g *globals) fromEnv(cmd *cobra.Command) {
	flags := cmd.Flags()
	if v := os.Getenv(EnvConfDir); v != "" && !flags.Changed("conf-dir") {
		g.confDir = v
	}
	if v := os.Getenv(EnvCNIPath); v != "" && !flags.Changed("cni-path") {
		g.cniPath = v
	}
	g.runDir = os.Getenv(EnvRunDir)
}

// usageArgs makes an argument validator's errors usage errors.
func usageArgs(v cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := v(cmd, args); err != nil {
			return &usageError{err}
		}
		return nil
	}
}

func networkCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "network",
		Short: "Manage moor networks",
		Long:  "List, inspect, create and remove moor networks, and attach network namespaces to them.",
		Example: `  moor network ls
  moor network create web
  moor network connect web mycontainer --alias db`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(lsCmd(g), inspectCmd(g), createCmd(g), rmCmd(g), pruneCmd(g), connectCmd(g), disconnectCmd(g))
	return cmd
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print moor's version",
		Example: "  moor version",
		Args:    usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), "moor", plugins.Version)
			return err
		},
	}
}
