package netconf

import "github.com/moornet/moor/plugins"

// FineOptions are the bridge driver's finer options (Docker's) as an overlay network
// takes them. icc false is built (package masq: a container opens no connection to any
// address of the overlay's range but its own gateway, on its host or across hosts); the
// others are refused, naming the option, rather than ignored:
//   - gatewayModeIPv4/IPv6: an overlay network's way out is each host's masquerade
//     (ipMasq); without it traffic leaves with the container's address, and nothing
//     filters what is routed in (the overlay publishes no ports), so "routed" would add
//     nothing and "isolated" would need the gateway the containers route through;
//   - hostBindingIPv4/IPv6: the overlay publishes no ports;
//   - snatAddress: not built (the masquerade uses the outgoing interface's address);
//   - internal: not built (every host would drop what leaves the range).
type FineOptions struct {
	// ICC false: containers of the network cannot reach each other (default true).
	ICC *bool `json:"icc,omitempty"`

	GatewayModeIPv4 string `json:"gatewayModeIPv4,omitempty"`
	GatewayModeIPv6 string `json:"gatewayModeIPv6,omitempty"`
	HostBindingIPv4 string `json:"hostBindingIPv4,omitempty"`
	HostBindingIPv6 string `json:"hostBindingIPv6,omitempty"`
	SNATAddress     string `json:"snatAddress,omitempty"`
	Internal        bool   `json:"internal,omitempty"`
}

// NoICC reports whether containers of the network are kept apart (icc false).
func (o FineOptions) NoICC() bool { return o.ICC != nil && !*o.ICC }

// validateFine refuses the options the overlay does not have.
func (o FineOptions) validateFine() error {
	for _, f := range []struct{ field, value, why string }{
		{"gatewayModeIPv4", o.GatewayModeIPv4, "an overlay network's way out is ipMasq on each host"},
		{"gatewayModeIPv6", o.GatewayModeIPv6, "the overlay is IPv4 only"},
		{"hostBindingIPv4", o.HostBindingIPv4, "the overlay publishes no ports"},
		{"hostBindingIPv6", o.HostBindingIPv6, "the overlay publishes no ports"},
		{"snatAddress", o.SNATAddress, "not built: the masquerade uses the outgoing interface's address"},
	} {
		if f.value != "" {
			return plugins.InvalidField(f.field, f.value, "does not apply to driver overlay: "+f.why)
		}
	}
	if o.Internal {
		return plugins.InvalidField("internal", true, "not built for driver overlay: drop ipMasq to keep traffic from being masqueraded, or use a bridge network")
	}
	return nil
}
