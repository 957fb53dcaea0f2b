package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/ipam/allocator"
	"github.com/moornet/moor/ipam/config"
	"github.com/moornet/moor/netavark/api"
	"github.com/moornet/moor/netavark/translate"
	"github.com/moornet/moor/plugins"
)

// A podman network is identified by its ID; moor's state of it (moor-ipam's
// reservations, DNS records, firewall rules, the bridge, libcni's cached results) is
// named by the network's name, which moor's plugins use everywhere. Podman removes a
// plugin's network without telling the plugin, so when a teardown failed, a network
// created again under the same name would find the old one's reservations (and refuse the
// addresses podman hands out: "already held"), records and rules.
//
// So moor-netavark remembers, per name, the network it last saw (networks/<name>.json in
// its state directory, written on create and setup), and when create or setup brings a
// network of that name with another ID, it first removes what the old one left: every
// reservation in its IPAM store, its DNS records and entry, its firewall rules, its
// cached results and, when no port is left on it, its bridge.

const (
	networksSubdir = "networks"
	jsonSuffix     = ".json"
	fileMode       = 0o600
	dirMode        = 0o700
)

func (c Config) networkFile(name string) string {
	return filepath.Join(c.StateDir, networksSubdir, name+jsonSuffix)
}

// recalled returns the network last seen under name, nil when none (or unreadable: a
// record that does not parse is treated as absent and overwritten).
func recalled(cfg Config, name string) *api.Network {
	data, err := os.ReadFile(cfg.networkFile(name))
	if err != nil {
		return nil
	}
	var n api.Network
	if json.Unmarshal(data, &n) != nil || n.Name != name {
		return nil
	}
	return &n
}

// remember records n as the network of its name (a temp file renamed over the record).
func remember(cfg Config, n api.Network) error {
	path := cfg.networkFile(n.Name)
	if err := os.MkdirAll(filepath.Dir(path), dirMode); err != nil {
		return err
	}
	data, err := json.Marshal(n)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, fileMode); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// adopt makes n the network of its name: when another network (another ID) was last seen
// under that name, its leftovers are removed first. Called with the network's lock held.
func adopt(cfg Config, n api.Network) error {
	old := recalled(cfg, n.Name)
	if old != nil && old.ID == n.ID {
		return nil
	}
	if old != nil {
		if err := clearStale(cfg, *old); err != nil {
			return fmt.Errorf("network %s was created again (ID %.12s, was %.12s); removing what the old one left: %w", n.Name, n.ID, old.ID, err)
		}
	}
	if err := remember(cfg, n); err != nil {
		return fmt.Errorf("recording network %s: %w", n.Name, err)
	}
	return nil
}

// clearStale removes what network old left behind (see above).
func clearStale(cfg Config, old api.Network) error {
	conf, err := translate.Build(old, translate.Options{DataDir: cfg.ipamDir()})
	if err != nil {
		// A record this version cannot translate: nothing of it can be found either.
		return nil
	}
	name := conf.List.Name
	var errs []error
	if err := releaseAll(conf.IPAM); err != nil {
		errs = append(errs, err)
	}
	if err := dropCachedResults(cfg, name); err != nil {
		errs = append(errs, err)
	}
	if conf.DNS {
		if err := removeDNSNetwork(cfg, name, false); err != nil {
			errs = append(errs, err)
		}
	}
	if conf.Driver != "bridge" {
		return errors.Join(errs...)
	}
	if err := removeRules(conf); err != nil {
		errs = append(errs, err)
	}
	h, err := netlinksafe.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("netlink: %w", err))...)
	}
	defer h.Close()
	br, _, err := portlessBridge(h, conf.Interface)
	if err == nil && br != nil {
		err = h.LinkDel(br)
	}
	if err != nil && !plugins.IsNotFound(err) {
		errs = append(errs, fmt.Errorf("removing bridge %s: %w", conf.Interface, err))
	}
	return errors.Join(errs...)
}

// releaseAll releases every reservation in the network's IPAM store (a GC with no valid
// attachment). A store that does not exist holds none; a store type this binary does not
// link is left alone.
func releaseAll(cfg *config.Config) error {
	if !allocator.StoreLinked(cfg.Store.Type) {
		return nil
	}
	if cfg.Store.Type == "" || cfg.Store.Type == config.StoreLocal {
		if _, err := os.Stat(allocator.StorePath(cfg)); errors.Is(err, os.ErrNotExist) {
			return nil
		}
	}
	st, err := allocator.OpenStore(cfg)
	if err != nil {
		return fmt.Errorf("opening the IPAM store of network %s: %w", cfg.Name, err)
	}
	defer st.Close()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	if _, err := st.GC(ctx, nil); err != nil {
		return fmt.Errorf("releasing the addresses of network %s: %w", cfg.Name, err)
	}
	return nil
}

// dropCachedResults removes libcni's cached results of network name.
func dropCachedResults(cfg Config, name string) error {
	files, err := filepath.Glob(filepath.Join(cfg.cacheDir(), "results", "*"))
	if err != nil {
		return err
	}
	var errs []error
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var entry struct {
			NetworkName string `json:"networkName"`
		}
		if json.Unmarshal(data, &entry) != nil || entry.NetworkName != name {
			continue
		}
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
