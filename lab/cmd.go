package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// Command returns `lab` with up, status and down, for the moor CLI to mount. A lab is named
// by its file (the name inside it, or the file's base name) or by its name.
func Command() *cobra.Command {
	var opts Options
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "Multi-host overlay labs on this machine (hosts are network namespaces)",
		Long: `A lab is a set of hosts, each a network namespace on a shared underlay bridge (in the
lab's own namespace, never the machine's), with etcd, each host's overlay agent and DNS
sidecar, and containers attached through the CNI plugins of --cni-bin-dir.`,
		Example: `  moor lab up examples/lab-3hosts.yaml --cni-bin-dir ./bin
  moor lab status lab-3hosts
  moor lab down lab-3hosts`,
	}
	f := cmd.PersistentFlags()
	f.StringVar(&opts.Root, "lab-dir", DefaultRoot, "directory of the labs' state")
	f.StringVar(&opts.BinDir, "cni-bin-dir", DefaultBinDir, "directory of the moor CNI plugins")
	f.StringVar(&opts.EtcdBinary, "etcd", DefaultEtcdBinary, "etcd binary")
	cmd.AddCommand(upCommand(&opts), statusCommand(&opts), downCommand(&opts))
	return cmd
}

func upCommand(opts *Options) *cobra.Command {
	return &cobra.Command{
		Use:   "up FILE",
		Short: "Build the lab a lab file describes",
		Example: `  moor lab up examples/lab-3hosts.yaml
  moor lab status lab-3hosts
  moor lab down lab-3hosts`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			spec, err := Load(args[0])
			if err != nil {
				return err
			}
			o := *opts
			o.Progress = cmd.OutOrStdout()
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			_, err = Up(ctx, spec, o)
			return err
		},
	}
}

func statusCommand(opts *Options) *cobra.Command {
	var noPing bool
	c := &cobra.Command{
		Use:   "status NAME|FILE",
		Short: "Show hosts, leases, containers and who can ping whom by name",
		Example: `  moor lab status lab-3hosts
  moor lab status --no-ping examples/lab-3hosts.yaml`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := openArg(args[0], *opts)
			if err != nil {
				return err
			}
			s := l.Status(cmd.Context(), !noPing)
			s.Print(cmd.OutOrStdout())
			if !s.Reachable() {
				return errors.New("some containers cannot reach each other")
			}
			return nil
		},
	}
	c.Flags().BoolVar(&noPing, "no-ping", false, "skip the connectivity matrix")
	return c
}

func downCommand(opts *Options) *cobra.Command {
	return &cobra.Command{
		Use:     "down NAME|FILE",
		Short:   "Remove everything the lab made",
		Example: `  moor lab down lab-3hosts`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := openArg(args[0], *opts)
			if err != nil {
				return err
			}
			if err := l.Down(cmd.Context()); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "lab %s is down\n", l.Name)
			return nil
		},
	}
}

// openArg opens a lab by name, or by the lab file that names it.
func openArg(arg string, opts Options) (*Lab, error) {
	name := arg
	if strings.ContainsAny(arg, "/.") {
		if spec, err := Load(arg); err == nil {
			name = spec.Name
		}
	}
	return Open(name, opts)
}
