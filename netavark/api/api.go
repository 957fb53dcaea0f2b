// Package api holds the JSON types of netavark's external plugin protocol (netavark
// docs/plugin-API.md and src/network/types.rs, API version 1.0.0), as moor-netavark reads
// and writes them:
//
//	create               stdin: Network                 stdout: the completed Network
//	setup <netns path>   stdin: Exec                    stdout: StatusBlock
//	teardown <netns>     stdin: Exec                    stdout: nothing
//	info                 stdout: Info
//	any failure          stdout: {"error": "..."} (Error), exit status 1
//
// Field names and optionality follow netavark's Rust types: a Rust Option may be absent
// or null (a pointer, slice or map here), every other field is written always, so that
// netavark's and podman's decoders accept what moor writes.
//
// Decisions where the protocol is silent:
//   - a Network keeps every field it does not know (podman sends "created" and "labels",
//     newer netavark versions add more) and writes them back unchanged: create must not
//     drop what podman stored;
//   - the error object has exactly one field, "error": podman decodes it with unknown
//     fields disallowed;
//   - input is decoded leniently (unknown fields are ignored): netavark adds fields over
//     its releases, and a plugin must keep working with the next one.
//
// What it does not do: validate values (package translate does) or run anything.
package api

import "encoding/json"

// Version is the plugin API version moor-netavark speaks.
const Version = "1.0.0"

// Network is a netavark network config.
type Network struct {
	Name             string            `json:"name"`
	ID               string            `json:"id"`
	Driver           string            `json:"driver"`
	NetworkInterface string            `json:"network_interface,omitempty"`
	Subnets          []Subnet          `json:"subnets,omitempty"`
	Routes           []Route           `json:"routes,omitempty"`
	IPv6Enabled      bool              `json:"ipv6_enabled"`
	Internal         bool              `json:"internal"`
	DNSEnabled       bool              `json:"dns_enabled"`
	DNSServers       []string          `json:"network_dns_servers,omitempty"`
	Options          map[string]string `json:"options,omitempty"`
	IPAMOptions      map[string]string `json:"ipam_options,omitempty"`

	// Extra holds the fields this type does not know, written back as they came.
	Extra map[string]json.RawMessage `json:"-"`
}

// knownNetworkFields are the JSON keys of Network's own fields.
var knownNetworkFields = map[string]bool{
	"name": true, "id": true, "driver": true, "network_interface": true, "subnets": true,
	"routes": true, "ipv6_enabled": true, "internal": true, "dns_enabled": true,
	"network_dns_servers": true, "options": true, "ipam_options": true,
}

// networkFields is Network without its methods, for the default encoding.
type networkFields Network

// UnmarshalJSON decodes the known fields and keeps the others in Extra.
func (n *Network) UnmarshalJSON(data []byte) error {
	var all map[string]json.RawMessage
	if err := json.Unmarshal(data, &all); err != nil {
		return err
	}
	var f networkFields
	if err := json.Unmarshal(data, &f); err != nil {
		return err
	}
	f.Extra = nil
	for k, v := range all {
		if !knownNetworkFields[k] {
			if f.Extra == nil {
				f.Extra = map[string]json.RawMessage{}
			}
			f.Extra[k] = v
		}
	}
	*n = Network(f)
	return nil
}

// MarshalJSON writes the known fields and Extra.
func (n Network) MarshalJSON() ([]byte, error) {
	known, err := json.Marshal(networkFields(n))
	if err != nil || len(n.Extra) == 0 {
		return known, err
	}
	all := map[string]json.RawMessage{}
	if err := json.Unmarshal(known, &all); err != nil {
		return nil, err
	}
	for k, v := range n.Extra {
		if _, clash := all[k]; !clash {
			all[k] = v
		}
	}
	return json.Marshal(all)
}

// Subnet is one subnet of a network.
type Subnet struct {
	Subnet     string      `json:"subnet"`
	Gateway    string      `json:"gateway,omitempty"`
	LeaseRange *LeaseRange `json:"lease_range,omitempty"`
}

// LeaseRange narrows the addresses handed out in a subnet.
type LeaseRange struct {
	StartIP string `json:"start_ip,omitempty"`
	EndIP   string `json:"end_ip,omitempty"`
}

// Route is a static route of a network (netavark 1.7 and later).
type Route struct {
	Destination string  `json:"destination"`
	Gateway     string  `json:"gateway"`
	Metric      *uint32 `json:"metric,omitempty"`
}

// PortMapping publishes container ports on the host.
type PortMapping struct {
	ContainerPort uint16 `json:"container_port"`
	HostIP        string `json:"host_ip"`
	HostPort      uint16 `json:"host_port"`
	// Protocol is "tcp", "udp" or "sctp", or several joined by commas; "" is tcp.
	Protocol string `json:"protocol"`
	// Range is how many consecutive ports, from HostPort and ContainerPort; 0 is 1.
	Range uint16 `json:"range"`
}

// PerNetworkOptions are the container's options on one network.
type PerNetworkOptions struct {
	Aliases       []string          `json:"aliases,omitempty"`
	InterfaceName string            `json:"interface_name"`
	StaticIPs     []string          `json:"static_ips,omitempty"`
	StaticMAC     string            `json:"static_mac,omitempty"`
	Options       map[string]string `json:"options,omitempty"`
}

// Exec is the stdin of setup and teardown.
type Exec struct {
	ContainerID    string            `json:"container_id"`
	ContainerName  string            `json:"container_name"`
	PortMappings   []PortMapping     `json:"port_mappings,omitempty"`
	Network        Network           `json:"network"`
	NetworkOptions PerNetworkOptions `json:"network_options"`
}

// StatusBlock is what setup reports about the container's interface on the network.
type StatusBlock struct {
	DNSSearchDomains []string                `json:"dns_search_domains"`
	DNSServerIPs     []string                `json:"dns_server_ips"`
	Interfaces       map[string]NetInterface `json:"interfaces"`
}

// NetInterface is one interface in the container.
type NetInterface struct {
	MACAddress string       `json:"mac_address"`
	Subnets    []NetAddress `json:"subnets"`
}

// NetAddress is one address of an interface: ipnet is the address with its subnet's
// prefix length ("10.88.0.50/16").
type NetAddress struct {
	Gateway string `json:"gateway,omitempty"`
	IPNet   string `json:"ipnet"`
}

// Info is the answer to the info command; Extra fields are written beside the others.
type Info struct {
	Version    string
	APIVersion string
	Extra      map[string]string
}

// MarshalJSON flattens Extra into the object, as netavark's Info does.
func (i Info) MarshalJSON() ([]byte, error) {
	out := map[string]string{}
	for k, v := range i.Extra {
		out[k] = v
	}
	out["version"] = i.Version
	out["api_version"] = i.APIVersion
	return json.Marshal(out)
}

// Error is the failure object written on stdout with exit status 1.
type Error struct {
	Error string `json:"error"`
}
