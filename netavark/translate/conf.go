// Package translate maps netavark's plugin protocol onto moor's CNI plugins: a netavark
// network becomes a moor config list (built by package conflist, as `moor network
// create` builds it, so that both write the same plugins), a setup request becomes a libcni RuntimeConf, and
// a CNI result becomes netavark's StatusBlock.
//
// The mapping, for driver moor-bridge (also moor-netavark) and moor-macvlan:
//
//	network.name                 the CNI network name (names the IPAM store, DNS records, rules)
//	network.subnets[].subnet     one moor-ipam range set each (at most one IPv4, one IPv6)
//	network.subnets[].gateway    the range's gateway (default: the subnet's first address)
//	network.subnets[].lease_range  rangeStart/rangeEnd, when moor allocates (see below)
//	network.network_interface    moor-bridge "bridge" / moor-macvlan "master"
//	network.internal             moor-bridge "internal" (no default route, no masquerade)
//	network.dns_enabled          moor-dns chained after the driver (search domain dns.moor)
//	network.network_dns_servers  moor-dns "upstreams"
//	network.options              mtu, vlan, isolate (moor "isolation"; "strict" is on),
//	                             mode (macvlan), and any `moor network create --opt` key,
//	                             Docker's names included (package conflist maps them:
//	                             com.docker.network.bridge.enable_icc -> icc,
//	                             ...bridge.gateway_mode_ipv4/6 -> gatewayModeIPv4/6,
//	                             ...bridge.host_binding_ipv4/6 -> hostBindingIPv4/6,
//	                             com.docker.network.host_ipv4 -> snatAddress,
//	                             com.docker.network.host_ipv6 -> snatAddressIPv6); a
//	                             macvlan network refuses the bridge's gateway options
//	network.ipam_options         driver: "host-local" (podman allocates) or "moor-ipam";
//	                             dataDir, resolvConf: moor-ipam's fields
//	network_options.static_ips   runtimeConfig.ips: exactly these addresses are reserved
//	network_options.static_mac   CNI_ARGS MAC
//	network_options.aliases      runtimeConfig.aliases (DNS networks only)
//	container_name               CNI_ARGS K8S_POD_NAME (moor-dns registers it)
//	port_mappings                runtimeConfig.portMappings, one entry per port and protocol
//
// Decisions where the protocol is silent:
//   - IPAM: podman allocates for host-local networks and passes static_ips; moor-ipam then
//     reserves exactly those, in ranges spanning the whole subnets (podman lets --ip name
//     any address of a subnet; lease_range is podman's business). Without static_ips
//     (another netavark caller, or ipam driver "moor-ipam", which tells podman to leave
//     allocation to moor) moor-ipam allocates, from lease_range when given;
//   - isolation between moor bridge networks stays on by default (moor's and Docker's
//     default); options isolate=false turns it off;
//   - netavark options moor has no equivalent for (metric, no_default_route, vrf, bridge
//     mode, bclim) and static routes are refused, naming the option, rather than ignored.
//
// What it does not do: run plugins, touch the kernel or read files.
package translate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"
	"strconv"

	"github.com/containernetworking/cni/libcni"

	"github.com/moornet/moor/conflist"
	"github.com/moornet/moor/ipam/config"
	"github.com/moornet/moor/netavark/api"
)

// Drivers: the netavark driver names moor-netavark answers to (the name of the plugin
// binary, or of a link to it, in netavark's plugin directory) and the moor driver each
// selects.
const (
	DriverNetavark = "moor-netavark"
	DriverBridge   = "moor-bridge"
	DriverMacvlan  = "moor-macvlan"
)

var moorDrivers = map[string]string{
	DriverNetavark: "bridge",
	DriverBridge:   "bridge",
	DriverMacvlan:  "macvlan",
}

// IPAM drivers of ipam_options.driver.
const (
	IPAMHostLocal = "host-local" // podman allocates and passes static_ips
	IPAMMoor      = "moor-ipam"  // moor-ipam allocates
	ipamDriverKey = "driver"
	dataDirKey    = "dataDir"
)

// Conf is a netavark network translated to a moor config list.
type Conf struct {
	List   *libcni.NetworkConfigList
	Driver string // the moor driver: "bridge" or "macvlan"
	// Interface is the bridge (bridge) or the master link (macvlan).
	Interface       string
	FirewallBackend string // moor-bridge's firewallBackend ("" detects)
	DNS             bool
	// IPAM is the parsed, canonical ipam section: the subnets, gateways and ranges.
	IPAM *config.Config
}

// Options tune Build.
type Options struct {
	// MoorAllocates: no static addresses come with the request, so moor-ipam allocates and
	// lease ranges narrow its ranges.
	MoorAllocates bool
	// DataDir is moor-ipam's dataDir unless ipam_options names one ("": moor-ipam's default).
	DataDir string
	// Networks and Routes are address space a network without subnets must not take
	// (create); PickIPv6 adds an IPv6 subnet to a network that has none.
	Networks, Routes []conflist.Taken
	PickIPv6         bool
}

// Build translates a network into a moor config list.
func Build(n api.Network, opts Options) (*Conf, error) {
	driver, ok := moorDrivers[n.Driver]
	if !ok {
		return nil, invalid("driver", n.Driver, fmt.Sprintf("moor-netavark serves %s, %s and %s", DriverBridge, DriverMacvlan, DriverNetavark))
	}
	if len(n.Routes) > 0 {
		return nil, invalid("routes", n.Routes[0].Destination, "static routes are not supported by moor's drivers")
	}
	dns := n.DNSEnabled
	spec := conflist.Spec{Name: n.Name, Driver: driver, Internal: n.Internal, DNS: &dns, DNSUpstreams: n.DNSServers, IPv6: opts.PickIPv6}
	for i, s := range n.Subnets {
		spec.Subnets = append(spec.Subnets, s.Subnet)
		if s.Gateway != "" {
			if _, err := netip.ParseAddr(s.Gateway); err != nil {
				return nil, invalid(fmt.Sprintf("subnets[%d].gateway", i), s.Gateway, "not an IP address")
			}
			spec.Gateways = append(spec.Gateways, s.Gateway)
		}
	}
	var err error
	if spec.Opts, err = driverOpts(driver, n); err != nil {
		return nil, err
	}
	if spec.IPAMOpts, err = ipamOpts(n.IPAMOptions, opts.DataDir); err != nil {
		return nil, err
	}
	res, err := conflist.Build(spec, opts.Networks, opts.Routes)
	if err != nil {
		return nil, fmt.Errorf("network %q: %w", n.Name, err)
	}
	data := res.Data
	if opts.MoorAllocates {
		if data, err = applyLeaseRanges(data, n.Subnets); err != nil {
			return nil, err
		}
	}
	return parse(driver, data)
}

// driverOpts turns network_interface and options into `moor network create --opt` pairs,
// sorted by key so that the same network always gives the same config.
func driverOpts(driver string, n api.Network) ([]conflist.KV, error) {
	var kvs []conflist.KV
	if n.NetworkInterface != "" {
		key := "bridge"
		if driver == "macvlan" {
			key = "parent"
		}
		kvs = append(kvs, conflist.KV{Key: key, Value: n.NetworkInterface})
	}
	keys := make([]string, 0, len(n.Options))
	for k := range n.Options {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := n.Options[k]
		field := "options." + k
		switch k {
		case "isolate":
			on, err := isolateValue(v)
			if err != nil {
				return nil, invalid(field, v, err.Error())
			}
			if driver != "bridge" {
				return nil, unsupported(field, v, "isolation applies to bridge networks only")
			}
			kvs = append(kvs, conflist.KV{Key: "isolation", Value: strconv.FormatBool(on)})
		case "metric", "no_default_route", "vrf", "bclim", "vxlan":
			return nil, unsupported(field, v, "moor's drivers have no equivalent")
		case "mode":
			if driver == "bridge" {
				return nil, unsupported(field, v, "moor-bridge always manages its bridge")
			}
			kvs = append(kvs, conflist.KV{Key: k, Value: v})
		default:
			kvs = append(kvs, conflist.KV{Key: k, Value: v})
		}
	}
	return kvs, nil
}

// isolateValue reads netavark's isolate option: true, strict (moor's isolation is
// already strict: no traffic between moor bridges at all) or false.
func isolateValue(v string) (bool, error) {
	if v == "strict" {
		return true, nil
	}
	on, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("must be true, strict or false")
	}
	return on, nil
}

// ipamOpts checks the IPAM driver and passes the other ipam_options to moor-ipam.
func ipamOpts(options map[string]string, dataDir string) ([]conflist.KV, error) {
	switch d := options[ipamDriverKey]; d {
	case "", IPAMHostLocal, IPAMMoor:
	default:
		return nil, unsupported("ipam_options.driver", d, fmt.Sprintf("moor-netavark allocates with %s (podman) or %s", IPAMHostLocal, IPAMMoor))
	}
	keys := make([]string, 0, len(options))
	for k := range options {
		if k != ipamDriverKey {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var kvs []conflist.KV
	for _, k := range keys {
		kvs = append(kvs, conflist.KV{Key: k, Value: options[k]})
	}
	if _, given := options[dataDirKey]; !given && dataDir != "" {
		kvs = append(kvs, conflist.KV{Key: dataDirKey, Value: dataDir})
	}
	return kvs, nil
}

// applyLeaseRanges sets rangeStart/rangeEnd in the range set of each subnet that has a
// lease range.
func applyLeaseRanges(data []byte, subnets []api.Subnet) ([]byte, error) {
	var list map[string]any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber() // keep integers (mtu, vlan) integers
	if err := dec.Decode(&list); err != nil {
		return nil, fmt.Errorf("the generated config list does not parse (a bug): %w", err)
	}
	for i, s := range subnets {
		if s.LeaseRange == nil {
			continue
		}
		p, err := netip.ParsePrefix(s.Subnet)
		if err != nil {
			return nil, invalid(fmt.Sprintf("subnets[%d].subnet", i), s.Subnet, "not a CIDR subnet")
		}
		r := firstRangeOf(list, p.Masked().String())
		if r == nil {
			return nil, fmt.Errorf("subnet %s is missing from the generated ranges (a bug)", p)
		}
		for _, b := range []struct{ field, key, value string }{
			{"start_ip", "rangeStart", s.LeaseRange.StartIP}, {"end_ip", "rangeEnd", s.LeaseRange.EndIP},
		} {
			if b.value == "" {
				continue
			}
			a, err := netip.ParseAddr(b.value)
			if err != nil || !p.Contains(a) {
				return nil, invalid(fmt.Sprintf("subnets[%d].lease_range.%s", i, b.field), b.value, "not an address of subnet "+p.String())
			}
			r[b.key] = a.String()
		}
	}
	return json.Marshal(list)
}

// firstRangeOf returns the first range of the range set of subnet, in the list's first
// plugin: plugins[0].ipam.ranges[i][0].
func firstRangeOf(list map[string]any, subnet string) map[string]any {
	plugins, _ := list["plugins"].([]any)
	if len(plugins) == 0 {
		return nil
	}
	first, _ := plugins[0].(map[string]any)
	ipam, _ := first["ipam"].(map[string]any)
	sets, _ := ipam["ranges"].([]any)
	for _, s := range sets {
		set, _ := s.([]any)
		if len(set) == 0 {
			continue
		}
		if r, _ := set[0].(map[string]any); r != nil && r["subnet"] == subnet {
			return r
		}
	}
	return nil
}

// parse reads back what the translation needs from the config list.
func parse(driver string, data []byte) (*Conf, error) {
	list, err := libcni.ConfListFromBytes(data)
	if err != nil || len(list.Plugins) == 0 {
		return nil, fmt.Errorf("the generated config list does not load (a bug): %v", err)
	}
	var first struct {
		Name            string          `json:"name"`
		CNIVersion      string          `json:"cniVersion"`
		Bridge          string          `json:"bridge"`
		Master          string          `json:"master"`
		FirewallBackend string          `json:"firewallBackend"`
		IPAM            json.RawMessage `json:"ipam"`
	}
	if err := json.Unmarshal(list.Plugins[0].Bytes, &first); err != nil {
		return nil, err
	}
	raw, err := json.Marshal(map[string]any{"name": list.Name, "cniVersion": list.CNIVersion, "ipam": first.IPAM})
	if err != nil {
		return nil, err
	}
	ipam, err := config.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("network %q: %w", list.Name, err)
	}
	c := &Conf{List: list, Driver: driver, Interface: first.Bridge, FirewallBackend: first.FirewallBackend, DNS: len(list.Plugins) > 1, IPAM: ipam}
	if driver == "macvlan" {
		c.Interface = first.Master
	}
	return c, nil
}

// Subnets are the network's subnets, canonical, in range-set order.
func (c *Conf) Subnets() []netip.Prefix {
	out := make([]netip.Prefix, 0, len(c.IPAM.Ranges))
	for _, set := range c.IPAM.Ranges {
		out = append(out, set[0].Subnet)
	}
	return out
}
