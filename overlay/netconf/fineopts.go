package netconf

import (
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/fineopts"
)

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
	fineopts.Fields
	Internal bool `json:"internal,omitempty"`
}

// validateFine refuses the options the overlay does not have.
func (o FineOptions) validateFine() error {
	noPorts := "the overlay publishes no ports"
	if err := o.Refuse("overlay", map[string]string{
		fineopts.GatewayModeIPv4: "an overlay network's way out is ipMasq on each host",
		fineopts.GatewayModeIPv6: "the overlay is IPv4 only",
		fineopts.HostBindingIPv4: noPorts, fineopts.HostBindingIPv6: noPorts,
		fineopts.SNATAddress: "not built: the masquerade uses the outgoing interface's address",
	}); err != nil {
		return err
	}
	if o.Internal {
		return plugins.InvalidField("internal", true, "not built for driver overlay: drop ipMasq to keep traffic from being masqueraded, or use a bridge network")
	}
	return nil
}
