package netconf

import (
	"net/netip"

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
//   - hostBindingIPv4/IPv6: the overlay publishes no ports.
//
// internal is built too (package masq: nothing forwarded between the bridge and
// addresses outside the range); with ipMasq it is refused (nothing would be masqueraded).
// So is snatAddress (an IPv4 address: the source masqueraded traffic leaves with); it
// needs ipMasq.
type FineOptions struct {
	fineopts.Fields
	Internal bool `json:"internal,omitempty"`

	// SNAT is snatAddress parsed (zero without it).
	SNAT netip.Addr `json:"-"`
}

// validateFine refuses the options the overlay does not have and checks snatAddress.
func (o *FineOptions) validateFine(ipMasq bool) error {
	noPorts := "the overlay publishes no ports"
	if err := o.Refuse("overlay", map[string]string{
		fineopts.GatewayModeIPv4: "an overlay network's way out is ipMasq on each host",
		fineopts.GatewayModeIPv6: "the overlay is IPv4 only",
		fineopts.HostBindingIPv4: noPorts, fineopts.HostBindingIPv6: noPorts,
		fineopts.SNATAddressIPv6: "the overlay is IPv4 only",
	}); err != nil {
		return err
	}
	if o.SNATAddress == "" {
		return nil
	}
	a, err := netip.ParseAddr(o.SNATAddress)
	switch {
	case err != nil || !a.Is4():
		return plugins.InvalidField("snatAddress", o.SNATAddress, "must be an IPv4 address (the overlay is IPv4 only)")
	case a.IsUnspecified() || a.IsLoopback() || a.IsMulticast():
		return plugins.InvalidField("snatAddress", o.SNATAddress, "must be a unicast address")
	case !ipMasq:
		return plugins.InvalidField("snatAddress", o.SNATAddress, "needs ipMasq: nothing is masqueraded without it")
	}
	o.SNAT = a
	return nil
}
