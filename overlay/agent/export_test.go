package agent

// SetFirewallEvents turns the nftables event watch on or off for the agents a test starts
// next (off: only the resync repairs the firewall).
func SetFirewallEvents(on bool) { firewallEvents = on }
