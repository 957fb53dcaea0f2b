// Package fineopts holds Docker's finer network options as config fields (icc, the gateway
// modes, the host bindings of published ports, the masquerade source), so that every
// driver reads them under the same names, and refuses those a driver does not have with
// code 7 naming the field, its value and the driver: a user who carries an option over
// from another driver learns that it does nothing there instead of finding out later.
//
// It implements none of them: moor-bridge does (with plugins/firewall), moor-macvlan maps
// icc false to its mode private, moor-overlay builds icc false in its own rules.
package fineopts

import "github.com/moornet/moor/plugins"

// Fields are the config fields, embedded in a driver's config.
type Fields struct {
	// ICC false: containers of the network cannot reach each other (Docker's
	// enable_icc=false). Default true.
	ICC *bool `json:"icc,omitempty"`
	// GatewayModeIPv4 / GatewayModeIPv6: "nat" (default), "routed" or "isolated".
	GatewayModeIPv4 string `json:"gatewayModeIPv4,omitempty"`
	GatewayModeIPv6 string `json:"gatewayModeIPv6,omitempty"`
	// HostBindingIPv4 / HostBindingIPv6: the host address a port mapping without hostIP
	// is published on.
	HostBindingIPv4 string `json:"hostBindingIPv4,omitempty"`
	HostBindingIPv6 string `json:"hostBindingIPv6,omitempty"`
	// SNATAddress: the source address masqueraded traffic of its family leaves with.
	SNATAddress string `json:"snatAddress,omitempty"`
	// SNATAddressIPv6: IPv6's source address when SNATAddress is an IPv4 one, so that
	// both families can have one (Docker's host_ipv4 and host_ipv6).
	SNATAddressIPv6 string `json:"snatAddressIPv6,omitempty"`
}

// NoICC reports whether containers of the network are kept apart (icc false).
func (f Fields) NoICC() bool { return f.ICC != nil && !*f.ICC }

// Field names, for Refuse.
const (
	GatewayModeIPv4 = "gatewayModeIPv4"
	GatewayModeIPv6 = "gatewayModeIPv6"
	HostBindingIPv4 = "hostBindingIPv4"
	HostBindingIPv6 = "hostBindingIPv6"
	SNATAddress     = "snatAddress"
	SNATAddressIPv6 = "snatAddressIPv6"
)

// Refuse returns a code 7 error for the first field set among those why names (field
// name -> the reason the driver does not have it), nil when none is set.
func (f Fields) Refuse(driver string, why map[string]string) error {
	for _, x := range []struct{ field, value string }{
		{GatewayModeIPv4, f.GatewayModeIPv4}, {GatewayModeIPv6, f.GatewayModeIPv6},
		{HostBindingIPv4, f.HostBindingIPv4}, {HostBindingIPv6, f.HostBindingIPv6},
		{SNATAddress, f.SNATAddress}, {SNATAddressIPv6, f.SNATAddressIPv6},
	} {
		if reason, refused := why[x.field]; refused && x.value != "" {
			return plugins.InvalidField(x.field, x.value, "does not apply to driver "+driver+": "+reason)
		}
	}
	return nil
}
