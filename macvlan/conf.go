package main

import (
	"fmt"
	"net"
	"path/filepath"

	"github.com/vishvananda/netlink"

	"github.com/moornet/moor/link/master"
	"github.com/moornet/moor/link/shaping"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/fineopts"
	"github.com/moornet/moor/plugins/statefs"
)

// lockSubdir, in the run directory ($MOOR_RUN_DIR, else /run/moor), is where the locks
// that serialise changes to shared links (the host shim, an 802.1q sub-interface moor
// created) live; the config's lockDir overrides it.
const lockSubdir = "macvlan"

// Macvlan modes, by the names the reference plugin and Docker's macvlan_mode use.
const (
	modeBridge   = "bridge"
	modePrivate  = "private"
	modeVEPA     = "vepa"
	modePassthru = "passthru"
)

var modes = map[string]netlink.MacvlanMode{
	modeBridge:   netlink.MACVLAN_MODE_BRIDGE,
	modePrivate:  netlink.MACVLAN_MODE_PRIVATE,
	modeVEPA:     netlink.MACVLAN_MODE_VEPA,
	modePassthru: netlink.MACVLAN_MODE_PASSTHRU,
}

// modeName is the config name of a kernel macvlan mode.
func modeName(m netlink.MacvlanMode) string {
	for name, mode := range modes {
		if mode == m {
			return name
		}
	}
	return fmt.Sprintf("mode(%d)", m)
}

// conf is every field of the reference macvlan plugin, with the same meaning, plus the
// host shim and the lock directory.
type conf struct {
	plugins.NetConf
	shaping.Conf

	// Master is the parent link; default: the link of the default route (of the
	// container's netns with linkInContainer). "<link>.<vlan id>" that does not exist is
	// created as an 802.1q sub-interface of <link>, as Docker's parent= does.
	Master string `json:"master"`
	// Mode is bridge (default), private, vepa or passthru.
	Mode string `json:"mode"`
	// MTU of the container link: 0 (the master's) up to the master's.
	MTU int `json:"mtu"`
	// Mac is the container link's MAC, the lowest precedence of the MAC inputs.
	Mac string `json:"mac,omitempty"`
	// LinkInContainer says the master lives in the container's netns.
	LinkInContainer bool `json:"linkInContainer,omitempty"`
	// BCQueueLen is the macvlan broadcast queue length (0: the kernel's default).
	BCQueueLen uint32 `json:"bcqueuelen,omitempty"`

	// HostShim gives the host a macvlan of its own on the master, with an address from
	// the network, so that host and containers reach each other.
	HostShim bool `json:"hostShim,omitempty"`
	// LockDir holds the locks of shared links; default /run/moor/macvlan.
	LockDir string `json:"lockDir,omitempty"`

	// Docker's finer options: icc false (containers on the master cannot reach each
	// other) is the kernel's mode private, which drops traffic between macvlans of one
	// master even when the switch reflects it; mode unset becomes private, any other
	// mode is refused. The options that need a gateway moor owns are refused: a macvlan
	// network's gateway is the LAN's router, and moor-macvlan neither masquerades nor
	// publishes ports.
	fineopts.Fields

	mode netlink.MacvlanMode
	vlan *master.VLAN // master parsed as <link>.<id>; nil when it is not of that form
}

// ipamTypeDHCP is the IPAM that cannot give the shim an address before the shim exists.
const ipamTypeDHCP = "dhcp"

// masterSpec is the config's master for package master.
func (c *conf) masterSpec() master.Spec {
	return master.Spec{Configured: c.Master, VLAN: c.vlan, InContainer: c.LinkInContainer, MTU: c.MTU, Kind: "macvlan"}
}

// validateBridgeOnly refuses the bridge driver's gateway options and maps icc false to
// mode private (before the mode's own check; loadConf leaves Mode empty for it).
func (c *conf) validateBridgeOnly() error {
	why := "the network's gateway is the LAN's router, and moor-macvlan neither masquerades nor publishes ports"
	if err := c.Refuse("macvlan", map[string]string{fineopts.GatewayModeIPv4: why, fineopts.GatewayModeIPv6: why,
		fineopts.HostBindingIPv4: why, fineopts.HostBindingIPv6: why, fineopts.SNATAddress: why, fineopts.SNATAddressIPv6: why}); err != nil {
		return err
	}
	if !c.NoICC() {
		return nil
	}
	switch c.Mode {
	case "", modePrivate:
		c.Mode = modePrivate
	default:
		return plugins.InvalidField("icc", false, fmt.Sprintf("needs mode private (containers on one master kept apart by the kernel); mode %q lets them talk", c.Mode))
	}
	if c.HostShim {
		return plugins.InvalidField("icc", false, "cannot be combined with hostShim: the shim is a macvlan of the master too, and mode private keeps it from the containers")
	}
	return nil
}

func loadConf(call *plugins.Call) (*conf, error) {
	c := &conf{}
	if err := plugins.LoadConf(call, c); err != nil {
		return nil, err
	}
	return c, nil
}

// Validate checks ranges and combinations, naming the field and value, and resolves the
// MAC (config mac is the lowest precedence, below CNI_ARGS, args.cni and runtimeConfig).
func (c *conf) Validate(call *plugins.Call) error {
	if c.Master != "" {
		if err := plugins.SpecIfName(c.Master); err != nil {
			return plugins.InvalidField("master", c.Master, err.Error())
		}
		v, err := master.ParseVLAN(c.Master)
		if err != nil {
			return err
		}
		c.vlan = v
	}
	if err := c.validateBridgeOnly(); err != nil {
		return err
	}
	if c.Mode == "" {
		c.Mode = modeBridge
	}
	mode, ok := modes[c.Mode]
	if !ok {
		return plugins.InvalidField("mode", c.Mode, "must be bridge, private, vepa or passthru")
	}
	c.mode = mode
	if c.MTU < 0 {
		return plugins.InvalidField("mtu", c.MTU, "must be 0 (the master's) or a positive MTU up to the master's")
	}
	if c.MAC == nil && c.Mac != "" {
		mac, err := net.ParseMAC(c.Mac)
		if err != nil || len(mac) != 6 {
			return plugins.InvalidField("mac", c.Mac, "not a 48-bit MAC address")
		}
		c.MAC = mac
	}
	if c.MAC != nil && c.MAC[0]&1 != 0 {
		return plugins.InvalidField("mac", c.MAC.String(), "a multicast address cannot be a link's MAC")
	}
	if c.HostShim {
		switch {
		case c.IPAM.Type == "":
			return plugins.InvalidField("hostShim", true, "the shim needs an address: set ipam")
		case c.IPAM.Type == ipamTypeDHCP:
			return plugins.InvalidField("hostShim", true, "needs an address reserved before the shim exists, which ipam type \"dhcp\" cannot give")
		case c.LinkInContainer:
			return plugins.InvalidField("hostShim", true, "cannot be combined with linkInContainer: the master is not the host's")
		case c.Mode != modeBridge && c.Mode != modeVEPA:
			return plugins.InvalidField("hostShim", true, fmt.Sprintf("needs mode bridge (or vepa behind a reflecting switch); mode %q keeps the host and the containers apart", c.Mode))
		}
	}
	if c.LockDir == "" {
		c.LockDir = filepath.Join(statefs.RunDir(call.Getenv), lockSubdir)
	}
	return c.Conf.Load(c.RuntimeConfig.Bandwidth)
}
