package cli

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/moornet/moor/cmd/moor/internal/cnirt"
	"github.com/moornet/moor/cmd/moor/internal/hostns"
	"github.com/moornet/moor/cmd/moor/internal/state"
	"github.com/moornet/moor/cmd/moor/internal/view"
	"github.com/moornet/moor/conflist"
	"github.com/moornet/moor/dns/server"
)

// session is one command's view of the world.
type session struct {
	g        *globals
	host     *hostns.Host
	nets     []*conflist.Network
	loadErrs []error
	rt       *cnirt.Runtime
	src      view.Source
}

// open loads the networks and opens the host namespace.
func (g *globals) open() (*session, error) {
	host, err := hostns.Open(g.netns)
	if err != nil {
		return nil, err
	}
	s := &session{g: g, host: host}
	s.nets, s.loadErrs = conflist.Load(g.confDir)
	s.rt = cnirt.New(filepath.SplitList(g.cniPath), g.cacheDir, host)
	dns, err := g.dns(host)
	if err != nil {
		_ = host.Close()
		return nil, err
	}
	s.src = view.Source{Host: host, DNS: dns, Cached: s.rt.Cached, CachedResult: s.rt.CachedResult}
	return s, nil
}

// dns locates the DNS sidecar of the host namespace: the paths moor-dns computes there
// (server.PathsOf, run inside the namespace), unless --dns-dir or --dns-socket name them.
func (g *globals) dns(host *hostns.Host) (state.DNS, error) {
	d := state.DNS{Dir: g.dnsDir, Socket: g.dnsSocket}
	err := host.Do(func() error {
		p, id, err := server.PathsOf(g.runDir)
		if err != nil {
			return err
		}
		if d.Dir == "" {
			d.Dir = p.StoreDir
		}
		if d.Socket == "" {
			d.Socket = p.ControlSocket
		}
		d.Netns = id
		return nil
	})
	if err != nil {
		return d, fmt.Errorf("locating the DNS sidecar of the host namespace: %w", err)
	}
	return d, nil
}

func (s *session) close() { _ = s.host.Close() }

// warnLoad prints the config files that could not be read, as warnings.
func (s *session) warnLoad(w io.Writer) {
	for _, err := range s.loadErrs {
		fmt.Fprintf(w, "moor: warning: %v\n", err)
	}
}

// resolve finds networks by name or ID; the errors of the ones not found are joined.
func (s *session) resolve(refs []string) ([]*conflist.Network, error) {
	var out []*conflist.Network
	var errs []error
	for _, ref := range refs {
		n, err := conflist.Resolve(s.nets, ref)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, n)
	}
	return out, errors.Join(errs...)
}

// run opens a session for a command's RunE.
func (g *globals) run(fn func(s *session, cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		s, err := g.open()
		if err != nil {
			return err
		}
		defer s.close()
		return fn(s, cmd, args)
	}
}

// completeNetworks completes network names from the config directory.
func (g *globals) completeNetworks(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	g.fromEnv(cmd)
	nets, _ := conflist.Load(g.confDir)
	var out []string
	for _, n := range nets {
		if strings.HasPrefix(n.Name, toComplete) {
			out = append(out, n.Name+"\t"+n.Driver)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// completeFirstNetwork completes a network name as the first argument only.
func (g *globals) completeFirstNetwork(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveDefault
	}
	return g.completeNetworks(cmd, args, toComplete)
}

// kv parses KEY=VALUE flag values, in order.
func kv(flag string, values []string) ([]conflist.KV, error) {
	var out []conflist.KV
	for _, v := range values {
		k, val, ok := strings.Cut(v, "=")
		if !ok || k == "" {
			return nil, usagef("%s %q: want KEY=VALUE", flag, v)
		}
		out = append(out, conflist.KV{Key: k, Value: val})
	}
	return out, nil
}
