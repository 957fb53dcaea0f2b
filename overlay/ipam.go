package main

import (
	"encoding/json"
	"net/netip"

	"github.com/moornet/moor/ipam/config"
	"github.com/moornet/moor/overlay/netconf"
	"github.com/moornet/moor/plugins"
)

// ipamCall returns the call as moor-ipam (in process, through ipamclient) must see it: the
// config with its ipam section made for the host's subnet. The user's ipam fields (dataDir,
// store, resolvConf, dns) are kept; the overlay adds one range (the host subnet and its
// gateway) and the routes: the overlay range and, with isDefaultGateway, everywhere, via the
// gateway. runtimeConfig.ipRanges is dropped: the range is the lease's. An etcd IPAM store
// gets a per-host prefix, so that one host's GC never sees another host's reservations.
// subnet may be the zero prefix for DEL, GC, CHECK and STATUS, which find reservations by
// key alone: a placeholder range is used then.
func ipamCall(call *plugins.Call, c *netconf.Conf, subnet netip.Prefix, hostID string) (*plugins.Call, error) {
	var top map[string]any
	if err := json.Unmarshal(call.StdinData, &top); err != nil {
		return nil, plugins.InvalidField("config", "", err.Error())
	}
	section := map[string]any{}
	if raw, ok := top["ipam"].(map[string]any); ok {
		section = raw
	}
	if !subnet.IsValid() {
		subnet = netip.PrefixFrom(c.Range.Addr(), c.HostSubnetLen)
	}
	gw := subnet.Addr().Next().String()
	section["type"] = netconf.MoorIPAM
	section["ranges"] = [][]map[string]string{{{"subnet": subnet.String(), "gateway": gw}}}
	routes := []map[string]string{{"dst": c.Range.String(), "gw": gw}}
	if c.DefaultGateway() {
		routes = append(routes, map[string]string{"dst": "0.0.0.0/0", "gw": gw})
	}
	section["routes"] = routes
	if st, ok := section["store"].(map[string]any); ok && st["type"] == config.StoreEtcd {
		if hostID == "" {
			return nil, plugins.InvalidField("hostID", "", "an etcd IPAM store needs the host ID (hostID or hostIDFile)")
		}
		prefix, _ := st["prefix"].(string)
		if prefix == "" {
			prefix = config.DefaultStorePrefix
		}
		st["prefix"] = prefix + "/" + hostID
	}
	top["ipam"] = section
	if rc, ok := top["runtimeConfig"].(map[string]any); ok {
		delete(rc, "ipRanges")
	}
	data, err := json.Marshal(top)
	if err != nil {
		return nil, err
	}
	cp := *call
	cp.StdinData = data
	return &cp, nil
}

// ipamHostID resolves the host ID for IPAM: only an etcd IPAM store needs it (its prefix is
// per host), so a missing machine-id does not fail a DEL on a local store.
func ipamHostID(c *netconf.Conf) (string, error) {
	id, err := c.ResolveHostID("")
	if err == nil {
		return id, nil
	}
	var m struct {
		Store struct {
			Type string `json:"type"`
		} `json:"store"`
	}
	if len(c.IPAMRaw) > 0 && json.Unmarshal(c.IPAMRaw, &m) == nil && m.Store.Type == config.StoreEtcd {
		return "", err
	}
	return "", nil
}
