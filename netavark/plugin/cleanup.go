package plugin

import (
	"context"
	"errors"
	"fmt"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"

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
	h, err := netlinksafe.NewHandle()
	if err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	defer h.Close()
	var br netlink.Link
	switch link, err := h.LinkByName(conf.Interface); {
	case plugins.IsNotFound(err):
	case err != nil:
		return fmt.Errorf("looking up bridge %s: %w", conf.Interface, err)
	default:
		if _, ok := link.(*netlink.Bridge); !ok {
			return nil
		}
		if used, err := hasPorts(h, link); err != nil || used {
			return err
		}
		br = link
	}
	name := conf.List.Name
	var errs []error
	// With no backend named and none working here, no backend holds rules to remove.
	if fw, err := firewall.New(conf.FirewallBackend, firewall.Options{}); err == nil {
		if err := fw.RemoveNetwork(name); err != nil {
			errs = append(errs, fmt.Errorf("removing the firewall rules of network %s: %w", name, err))
		}
	} else if conf.FirewallBackend != firewall.KindDetect {
		errs = append(errs, fmt.Errorf("removing the firewall rules of network %s: %w", name, err))
	}
	if conf.DNS {
		if err := removeDNSNetwork(cfg, name); err != nil {
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

// hasPorts reports whether any link is enslaved to the bridge.
func hasPorts(h netlinksafe.Handle, br netlink.Link) (bool, error) {
	links, err := h.LinkList()
	if err != nil {
		return false, fmt.Errorf("listing links: %w", err)
	}
	for _, l := range links {
		if l.Attrs().MasterIndex == br.Attrs().Index {
			return true, nil
		}
	}
	return false, nil
}

// removeDNSNetwork drops the network from moor-dns's store when it holds no record, and
// has a running sidecar reload (it then stops serving the gateway).
func removeDNSNetwork(cfg Config, network string) error {
	if records.ValidNetworkName(network) != nil {
		return nil
	}
	st, err := records.NewLocal(cfg.DNSDir)
	if err != nil {
		return fmt.Errorf("opening DNS records %s: %w", cfg.DNSDir, err)
	}
	defer st.Close()
	ctx := context.Background()
	recs, err := st.List(ctx, network)
	if err != nil {
		return fmt.Errorf("listing DNS records of %s: %w", network, err)
	}
	if len(recs) > 0 {
		return nil
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
