package plugin

import (
	"context"
	"errors"
	"fmt"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/dns/records"
	"github.com/moornet/moor/dns/server"
	"github.com/moornet/moor/netavark/translate"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/firewall"
)

// removeIfUnused removes a bridge network whose bridge has no port left: its firewall
// rules, its DNS network entry (when no record is left in it) and the bridge. Called with
// the network's lock held, after a DEL. A bridge that is gone already still has its rules
// and entry removed; a link of that name that is not a bridge is left alone.
func removeIfUnused(cfg Config, conf *translate.Conf) error {
	if conf.Driver != "bridge" || conf.Interface == "" {
		return nil
	}
	h, err := netlinksafe.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	defer h.Close()
	br, used, err := portlessBridge(h, conf.Interface)
	if err != nil || used {
		return err
	}
	name := conf.List.Name
	var errs []error
	if err := removeRules(conf); err != nil {
		errs = append(errs, err)
	}
	if conf.DNS {
		if err := removeDNSNetwork(cfg, name, true); err != nil {
			errs = append(errs, err)
		}
	}
	if br != nil && len(errs) == 0 {
		if err := h.LinkDel(br); err != nil && !plugins.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting bridge %s: %w", conf.Interface, err))
		}
	}
	return errors.Join(errs...)
}

// portlessBridge looks up the bridge name: a bridge without ports is returned; used
// reports a bridge with ports, or a link of that name that is not a bridge (both are left
// alone); a missing link is neither.
func portlessBridge(h netlinksafe.Handle, name string) (br netlink.Link, used bool, err error) {
	link, err := h.LinkByName(name)
	switch {
	case plugins.IsNotFound(err):
		return nil, false, nil
	case err != nil:
		return nil, false, fmt.Errorf("looking up bridge %s: %w", name, err)
	}
	if _, ok := link.(*netlink.Bridge); !ok {
		return nil, true, nil
	}
	links, err := h.LinkList()
	if err != nil {
		return nil, false, fmt.Errorf("listing links: %w", err)
	}
	for _, l := range links {
		if l.Attrs().MasterIndex == link.Attrs().Index {
			return nil, true, nil
		}
	}
	return link, false, nil
}

// removeRules removes the network's firewall rules. With no backend named and none
// working here, no backend holds rules to remove.
func removeRules(conf *translate.Conf) error {
	name := conf.List.Name
	fw, err := firewall.New(conf.FirewallBackend, firewall.Options{})
	if err != nil {
		if conf.FirewallBackend == firewall.KindDetect {
			return nil
		}
		return fmt.Errorf("removing the firewall rules of network %s: %w", name, err)
	}
	if err := fw.RemoveNetwork(name); err != nil {
		return fmt.Errorf("removing the firewall rules of network %s: %w", name, err)
	}
	return nil
}

// removeDNSNetwork drops the network from moor-dns's store (only when it holds no record,
// with onlyEmpty; else with its records), and has a running sidecar reload (it then stops
// serving the gateway).
func removeDNSNetwork(cfg Config, network string, onlyEmpty bool) error {
	if records.ValidNetworkName(network) != nil {
		return nil
	}
	st, err := records.NewLocal(cfg.DNSDir)
	if err != nil {
		return fmt.Errorf("opening DNS records %s: %w", cfg.DNSDir, err)
	}
	defer st.Close()
	ctx := context.Background()
	if onlyEmpty {
		recs, err := st.List(ctx, network)
		if err != nil {
			return fmt.Errorf("listing DNS records of %s: %w", network, err)
		}
		if len(recs) > 0 {
			return nil
		}
	}
	if err := st.DeleteNetwork(ctx, network); err != nil {
		return fmt.Errorf("removing DNS network %s: %w", network, err)
	}
	if server.Healthy(cfg.DNSSocket) {
		if err := server.Reload(cfg.DNSSocket); err != nil {
			return fmt.Errorf("DNS network %s removed, but the sidecar did not reload: %w", network, err)
		}
	}
	return nil
}
