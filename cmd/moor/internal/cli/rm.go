package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/cmd/moor/internal/state"
	"github.com/moornet/moor/conflist"
)

func rmCmd(g *globals) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "rm [flags] NETWORK...",
		Aliases: []string{"remove"},
		Short:   "Remove networks and everything they hold",
		Long: `Remove each network: its bridge (only when it is moor's: a bridge no other network names,
with no port that is not moor's), its firewall rules, its DNS records, its IPAM state
(the store file, or its etcd prefix), then its config file. When a step fails the
config file is kept, so that rm can be run again.

A network with containers attached is refused unless -f: then the runtime's GC runs first
with no valid attachment (libcni DELs every cached attachment, and every plugin removes
what the network's containers held).`,
		Example: `  moor network rm web
  moor network rm -f web db`,
		Args:              usageArgs(cobra.MinimumNArgs(1)),
		ValidArgsFunction: g.completeNetworks,
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "remove also while containers are attached")
	cmd.RunE = g.run(func(s *session, cmd *cobra.Command, args []string) error {
		nets, resolveErr := s.resolve(args)
		errs := []error{resolveErr}
		for _, n := range nets {
			if err := s.remove(cmd, n, force); err != nil {
				errs = append(errs, err)
				continue
			}
			fmt.Fprintln(cmd.OutOrStdout(), n.Name)
		}
		return errors.Join(errs...)
	})
	return cmd
}

// remove removes one network (see rm's help).
func (s *session) remove(cmd *cobra.Command, n *conflist.Network, force bool) error {
	ctx := cmd.Context()
	atts, err := s.src.Attachments(ctx, n)
	if err != nil && !force {
		return fmt.Errorf("network %s: cannot tell whether containers are attached (use -f to remove anyway): %w", n.Name, err)
	}
	if len(atts) > 0 {
		if !force {
			ids := make([]string, len(atts))
			for i, a := range atts {
				ids[i] = a.ContainerID
			}
			return fmt.Errorf("network %s has %d container(s) attached (%s): disconnect them first, or use -f", n.Name, len(atts), strings.Join(ids, ", "))
		}
	}
	if force {
		if err := s.rt.GC(n.List, nil); err != nil {
			fmt.Fprintf(cmd.ErrOrStderr(), "moor: warning: network %s: GC before removal: %v\n", n.Name, err)
		}
	}
	return s.removeState(ctx, cmd.ErrOrStderr(), n)
}

// removeState removes the network's bridge, rules, records and IPAM state, then its
// config file when all of that worked.
func (s *session) removeState(ctx context.Context, stderr io.Writer, n *conflist.Network) error {
	var errs []error
	var kept *state.KeptError
	switch err := state.RemoveBridge(s.host, n, s.nets); {
	case errors.As(err, &kept):
		fmt.Fprintf(stderr, "moor: note: %v\n", err)
	case err != nil:
		errs = append(errs, err)
	}
	if err := state.RemoveFirewall(s.host, n); err != nil {
		errs = append(errs, err)
	}
	if n.DNS != nil {
		if err := s.src.DNS.For(n).Remove(ctx, n.Name); err != nil {
			errs = append(errs, err)
		}
	}
	if err := state.RemoveIPAM(ctx, n); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("network %s: %w (its config %s is kept: run rm again)", n.Name, errors.Join(errs...), n.File)
	}
	if err := os.Remove(n.File); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("network %s: removing %s: %w", n.Name, n.File, err)
	}
	return nil
}

func pruneCmd(g *globals) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "prune [flags]",
		Short: "Remove every network without containers",
		Long: `Remove, as rm does, every moor network with no container attached. Asks first when
stdin is a terminal, unless -f; never asks otherwise.`,
		Example: `  moor network prune
  moor network prune -f`,
		Args: usageArgs(cobra.NoArgs),
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "do not ask for confirmation")
	cmd.RunE = g.run(func(s *session, cmd *cobra.Command, _ []string) error {
		if !force && isTerminal(cmd.InOrStdin()) && !confirm(cmd) {
			return nil
		}
		var removed []string
		var errs []error
		for _, n := range s.nets {
			atts, err := s.src.Attachments(cmd.Context(), n)
			if err != nil {
				errs = append(errs, fmt.Errorf("network %s: skipped: %w", n.Name, err))
				continue
			}
			if len(atts) > 0 {
				continue
			}
			if err := s.removeState(cmd.Context(), cmd.ErrOrStderr(), n); err != nil {
				errs = append(errs, err)
				continue
			}
			removed = append(removed, n.Name)
		}
		if len(removed) > 0 {
			fmt.Fprintln(cmd.OutOrStdout(), "Deleted Networks:")
			for _, name := range removed {
				fmt.Fprintln(cmd.OutOrStdout(), name)
			}
		}
		return errors.Join(errs...)
	})
	return cmd
}

// confirm asks on stdin; anything but y/yes declines.
func confirm(cmd *cobra.Command) bool {
	fmt.Fprint(cmd.OutOrStdout(), "WARNING! This will remove all moor networks not used by at least one container.\nAre you sure you want to continue? [y/N] ")
	line, _ := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
	answer := strings.ToLower(strings.TrimSpace(line))
	return answer == "y" || answer == "yes"
}

// isTerminal reports whether r is a terminal.
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
