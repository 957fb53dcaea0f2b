package plugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/conflist"
	"github.com/moornet/moor/netavark/api"
	"github.com/moornet/moor/netavark/translate"
)

// Create checks a new network and completes it (translate.Complete). A network without
// subnets gets one that overlaps neither a route of this host nor a subnet of another of
// podman's networks. What an earlier network of the same name (another ID) left is
// removed (see adopt).
func Create(cfg Config, n api.Network) (api.Network, error) {
	out, err := complete(cfg, n)
	if err != nil {
		return out, err
	}
	unlock, err := lockNetwork(cfg, out.Name)
	if err != nil {
		return out, err
	}
	defer unlock()
	return out, adopt(cfg, out)
}

func complete(cfg Config, n api.Network) (api.Network, error) {
	opts := translate.Options{DataDir: cfg.ipamDir()}
	if len(n.Subnets) == 0 {
		var err error
		if opts.Routes, err = hostRoutes(); err != nil {
			return n, err
		}
		if opts.Networks, err = podmanSubnets(cfg.NetworkDir, n.Name); err != nil {
			return n, err
		}
	}
	return translate.Complete(n, opts)
}

// hostRoutes are the routes of this host's main table as address space taken.
func hostRoutes() ([]conflist.Taken, error) {
	h, err := netlinksafe.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	defer h.Close()
	routes, err := h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("listing the host's routes: %w", err)
	}
	return conflist.RoutesTaken(routes, func(index int) string {
		if l, err := h.LinkByIndex(index); err == nil {
			return l.Attrs().Name
		}
		return ""
	}), nil
}

// podmanSubnets reads the subnets of podman's network files (<dir>/*.json) other than
// the network named self. A missing directory holds none; a file that does not parse is
// skipped (it is podman's to judge).
func podmanSubnets(dir, self string) ([]conflist.Taken, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	var out []conflist.Taken
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			return nil, fmt.Errorf("reading podman's network %s: %w", f, err)
		}
		var other api.Network
		if json.Unmarshal(data, &other) != nil || other.Name == self {
			continue
		}
		var prefixes []netip.Prefix
		for _, s := range other.Subnets {
			if p, err := netip.ParsePrefix(strings.TrimSpace(s.Subnet)); err == nil {
				prefixes = append(prefixes, p.Masked())
			}
		}
		out = append(out, conflist.NetworkTaken(other.Name, prefixes)...)
	}
	return out, nil
}
