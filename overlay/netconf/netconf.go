// Package netconf parses and checks a moor-overlay network config, for the plugin, the agent
// (`moor-overlay agent --config FILE`) and the lab library alike, so that all three read the
// same fields with the same defaults:
//
//	{
//	  "type": "moor-overlay",
//	  "subnet": "10.240.0.0/16",        the network's range, cut into host subnets
//	  "hostSubnetLen": 24,              prefix length of each host's subnet (default 24)
//	  "vni": 42,                        VXLAN network identifier (default 1)
//	  "port": 4789,                     VXLAN UDP port (default 4789, the IANA port)
//	  "underlay": "eth0",               link name or address (default: the default-route link)
//	  "mtu": 0,                         container and bridge MTU (default: underlay MTU - 50)
//	  "directRouting": false,           plain routes to hosts on the underlay's L2 segment
//	  "ipMasq": false,                  masquerade traffic leaving the overlay range
//	  "isDefaultGateway": true,         containers get a default route via the gateway
//	  "bridge": "moorov42",             default "moorov<vni>"
//	  "vxlanDevice": "moorvx42",        default "moorvx<vni>"
//	  "encryption": "",                 "" (clear VXLAN) or "wireguard"
//	  "wireguardDevice": "moorwg42",    default "moorwg<vni>"
//	  "wireguardPort": 51820,           WireGuard's UDP listen port (default 51820)
//	  "stateDir": "/var/lib/moor/overlay", where the host's private key is kept
//	  "hostID": "",                     default: the content of hostIDFile
//	  "hostIDFile": "/etc/machine-id",
//	  "leaseTTL": "2m",                 a host's lease is reclaimed after this long without heartbeat
//	  "agentSocket": "/run/moor/overlay-agent.sock",
//	  "store": {"endpoints": ["http://10.0.0.1:2379"], "prefix": "/moor/overlay",
//	            "tls": {"certFile": "", "keyFile": "", "caFile": ""},
//	            "dialTimeout": "2s", "requestTimeout": "5s"},
//	  "ipam": {"type": "moor-ipam", "dataDir": "/var/lib/moor/ipam", "store": {...}}
//	}
//
// Decisions, and why:
//   - the etcd store is required: an overlay without a shared store cannot know its peers;
//   - ipam may only name moor-ipam (or be left out): the overlay owns the range (the host's
//     subnet) and routes, so ipam.ranges, subnet, rangeStart, rangeEnd, gateway and routes
//     are refused with code 2; dataDir, store, resolvConf and dns pass through;
//   - the host subnet must leave room for a gateway and containers (hostSubnetLen at most
//     30) and be smaller than the range; IPv4 only (VXLAN over an IPv6 underlay and IPv6
//     overlays are not built yet);
//   - encryption "wireguard" swaps the data plane (vni, port and vxlanDevice are then
//     unused); the default MTU becomes the underlay's minus 60 (WireGuard over IPv4); the
//     private key lives under stateDir, which survives reboots (unlike /run);
//   - host IDs are 1-64 characters of letters, digits, '.', '_' and '-', because they name
//     etcd keys and DNS record owners; a machine-id file is trimmed of whitespace (the file
//     ends in a newline).
//
// What it does not do: touch the kernel (the underlay's address and MTU are resolved by
// package dataplane) or etcd.
package netconf

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/utils"

	"github.com/moornet/moor/link/shaping"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/etcdconf"
)

// Defaults.
const (
	DefaultHostSubnetLen  = 24
	DefaultVNI            = 1
	DefaultPort           = 4789
	DefaultHostIDFile     = "/etc/machine-id"
	DefaultLeaseTTL       = 2 * time.Minute
	DefaultStorePrefix    = "/moor/overlay"
	DefaultDialTimeout    = 2 * time.Second
	DefaultRequestTimeout = 5 * time.Second
	DefaultAgentSocket    = "/run/moor/overlay-agent.sock"
	DefaultBridgePrefix   = "moorov"
	DefaultVXLANPrefix    = "moorvx"
	DefaultWGPrefix       = "moorwg"
	DefaultWGPort         = 51820
	DefaultStateDir       = "/var/lib/moor/overlay"
	// EncryptionWireGuard is the encryption value that selects the WireGuard plane.
	EncryptionWireGuard = "wireguard"
	// MoorIPAM is the only IPAM type the overlay accepts.
	MoorIPAM = "moor-ipam"
)

// Limits.
const (
	maxVNI        = 1<<24 - 1
	maxHostIDLen  = 64
	maxHostSubnet = 30 // a /30 still holds a gateway and one container
	minLeaseTTL   = 2 * time.Second
	mtuMin        = 68 // IPv4's minimum (RFC 791)
	mtuMax        = 65535
	maxUDPPort    = 65535
)

var hostIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// TLS names the etcd client's TLS files.
type TLS = etcdconf.TLS

// Store is the etcd store of leases. Endpoints, TLS and the timeouts are the etcd fields of
// every moor config (plugins/etcdconf); Etcd is what they parse to.
type Store struct {
	Endpoints      []string        `json:"endpoints"`
	Prefix         string          `json:"prefix,omitempty"`
	TLS            TLS             `json:"tls,omitempty"`
	DialTimeout    json.RawMessage `json:"dialTimeout,omitempty"`
	RequestTimeout json.RawMessage `json:"requestTimeout,omitempty"`

	Etcd etcdconf.Config `json:"-"`
}

// Conf is a moor-overlay plugin config.
type Conf struct {
	plugins.NetConf
	shaping.Conf
	FineOptions

	Subnet           string `json:"subnet"`
	HostSubnetLen    int    `json:"hostSubnetLen,omitempty"`
	VNI              int    `json:"vni,omitempty"`
	Port             int    `json:"port,omitempty"`
	Underlay         string `json:"underlay,omitempty"`
	MTU              int    `json:"mtu,omitempty"`
	DirectRouting    bool   `json:"directRouting,omitempty"`
	IPMasq           bool   `json:"ipMasq,omitempty"`
	IsDefaultGateway *bool  `json:"isDefaultGateway,omitempty"`
	Bridge           string `json:"bridge,omitempty"`
	VXLANDevice      string `json:"vxlanDevice,omitempty"`
	Encryption       string `json:"encryption,omitempty"`
	WireGuardDevice  string `json:"wireguardDevice,omitempty"`
	WireGuardPort    int    `json:"wireguardPort,omitempty"`
	StateDir         string `json:"stateDir,omitempty"`
	HostID           string `json:"hostID,omitempty"`
	HostIDFile       string `json:"hostIDFile,omitempty"`
	LeaseTTL         string `json:"leaseTTL,omitempty"`
	AgentSocket      string `json:"agentSocket,omitempty"`
	Store            Store  `json:"store"`
	// IPAMRaw is the ipam section as given; it shadows NetConf.IPAM so that every field
	// passes through to moor-ipam.
	IPAMRaw json.RawMessage `json:"ipam,omitempty"`

	// Filled by Validate.
	Range netip.Prefix  `json:"-"`
	TTL   time.Duration `json:"-"`
}

// New returns a Conf with every default set, ready to decode into.
func New() *Conf {
	return &Conf{
		HostSubnetLen: DefaultHostSubnetLen,
		VNI:           DefaultVNI,
		Port:          DefaultPort,
		HostIDFile:    DefaultHostIDFile,
		AgentSocket:   DefaultAgentSocket,
		WireGuardPort: DefaultWGPort,
		StateDir:      DefaultStateDir,
	}
}

// Load decodes and checks the call's config (plugins.LoadConf with this package's defaults).
func Load(call *plugins.Call) (*Conf, error) {
	c := New()
	if err := plugins.LoadConf(call, c); err != nil {
		return nil, err
	}
	return c, nil
}

// Parse decodes and checks one plugin config outside a CNI call (the agent, the lab). name
// and cniVersion come from the enclosing conflist when the plugin entry lacks them.
func Parse(data []byte, name, cniVersion string) (*Conf, error) {
	c := New()
	if err := json.Unmarshal(data, c); err != nil {
		return nil, plugins.InvalidField("config", string(data), err.Error())
	}
	if c.Name == "" {
		c.Name = name
	}
	if c.CNIVersion == "" {
		c.CNIVersion = cniVersion
	}
	if err := plugins.ValidateNetworkName(c.Name); err != nil {
		return nil, err
	}
	if err := c.Validate(nil); err != nil {
		return nil, err
	}
	return c, nil
}

// ErrNoOverlay is returned by ParseFile for a file with no moor-overlay plugin.
var ErrNoOverlay = errors.New("no moor-overlay plugin in the config")

// ParseFile reads a conflist (or a single plugin config) and returns its moor-overlay
// entry, checked.
func ParseFile(path string) (*Conf, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading overlay config: %w", err)
	}
	var list struct {
		CNIVersion string            `json:"cniVersion"`
		Name       string            `json:"name"`
		Type       string            `json:"type"`
		Plugins    []json.RawMessage `json:"plugins"`
	}
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if list.Type == TypeName {
		return Parse(data, list.Name, list.CNIVersion)
	}
	for _, p := range list.Plugins {
		var head struct {
			Type string `json:"type"`
		}
		if json.Unmarshal(p, &head) == nil && head.Type == TypeName {
			return Parse(p, list.Name, list.CNIVersion)
		}
	}
	return nil, fmt.Errorf("%s: %w", path, ErrNoOverlay)
}

// TypeName is the plugin's CNI type.
const TypeName = "moor-overlay"

// Validate checks ranges and combinations and fills the parsed fields. call may be nil.
func (c *Conf) Validate(*plugins.Call) error {
	p, err := netip.ParsePrefix(c.Subnet)
	if err != nil || !p.Addr().Is4() {
		return plugins.InvalidField("subnet", c.Subnet, "must be an IPv4 CIDR such as 10.240.0.0/16")
	}
	if p.Masked() != p {
		return plugins.InvalidField("subnet", c.Subnet, "has host bits set; did you mean "+p.Masked().String()+"?")
	}
	c.Range = p
	if c.HostSubnetLen <= p.Bits() || c.HostSubnetLen > maxHostSubnet {
		return plugins.InvalidField("hostSubnetLen", c.HostSubnetLen, fmt.Sprintf("must be longer than the subnet's /%d and at most %d", p.Bits(), maxHostSubnet))
	}
	if c.VNI < 1 || c.VNI > maxVNI {
		return plugins.InvalidField("vni", c.VNI, fmt.Sprintf("must be between 1 and %d", maxVNI))
	}
	if c.Port < 1 || c.Port > maxUDPPort {
		return plugins.InvalidField("port", c.Port, fmt.Sprintf("must be between 1 and %d", maxUDPPort))
	}
	if c.MTU != 0 && (c.MTU < mtuMin || c.MTU > mtuMax) {
		return plugins.InvalidField("mtu", c.MTU, fmt.Sprintf("must be 0 (underlay MTU - 50) or between %d and %d", mtuMin, mtuMax))
	}
	if c.Bridge == "" {
		c.Bridge = fmt.Sprintf("%s%d", DefaultBridgePrefix, c.VNI)
	}
	if c.VXLANDevice == "" {
		c.VXLANDevice = fmt.Sprintf("%s%d", DefaultVXLANPrefix, c.VNI)
	}
	if err := c.validateEncryption(); err != nil {
		return err
	}
	if err := c.validateFine(c.IPMasq); err != nil {
		return err
	}
	if c.Internal && c.IPMasq {
		return plugins.InvalidField("ipMasq", true, "an internal network has nothing to masquerade: drop one of internal and ipMasq")
	}
	for _, f := range []struct{ name, value string }{{"bridge", c.Bridge}, {"vxlanDevice", c.VXLANDevice}, {"wireguardDevice", c.WireGuardDevice}} {
		if e := utils.ValidateInterfaceName(f.value); e != nil {
			return plugins.InvalidField(f.name, f.value, e.Msg)
		}
	}
	if c.Bridge == c.VXLANDevice {
		return plugins.InvalidField("vxlanDevice", c.VXLANDevice, "must differ from bridge")
	}
	if c.HostID != "" {
		if err := ValidHostID(c.HostID); err != nil {
			return plugins.InvalidField("hostID", c.HostID, err.Error())
		}
	}
	if c.TTL, err = duration("leaseTTL", c.LeaseTTL, DefaultLeaseTTL); err != nil {
		return err
	}
	if c.TTL < minLeaseTTL {
		return plugins.InvalidField("leaseTTL", c.LeaseTTL, fmt.Sprintf("must be at least %s", minLeaseTTL))
	}
	if err := c.validateStore(); err != nil {
		return err
	}
	if err := c.Conf.Load(c.RuntimeConfig.Bandwidth); err != nil {
		return err
	}
	return c.validateIPAM()
}

func (c *Conf) validateEncryption() error {
	switch c.Encryption {
	case "", EncryptionWireGuard:
	default:
		return plugins.InvalidField("encryption", c.Encryption, `must be "" (clear VXLAN) or "wireguard"`)
	}
	if c.WireGuardDevice == "" {
		c.WireGuardDevice = fmt.Sprintf("%s%d", DefaultWGPrefix, c.VNI)
	}
	if c.WireGuardDevice == c.Bridge {
		return plugins.InvalidField("wireguardDevice", c.WireGuardDevice, "must differ from bridge")
	}
	if c.WireGuardPort < 1 || c.WireGuardPort > maxUDPPort {
		return plugins.InvalidField("wireguardPort", c.WireGuardPort, fmt.Sprintf("must be between 1 and %d", maxUDPPort))
	}
	if !strings.HasPrefix(c.StateDir, "/") {
		return plugins.InvalidField("stateDir", c.StateDir, "must be an absolute path")
	}
	return nil
}

// Encrypted reports whether the network runs the WireGuard plane.
func (c *Conf) Encrypted() bool { return c.Encryption == EncryptionWireGuard }

func (c *Conf) validateStore() error {
	s := &c.Store
	fields := etcdconf.Fields{Endpoints: s.Endpoints, DialTimeout: s.DialTimeout, RequestTimeout: s.RequestTimeout}
	if s.TLS.Any() {
		fields.TLS = &s.TLS
	}
	var err error
	if s.Etcd, err = fields.Config("store"); err != nil {
		return err
	}
	if s.Prefix == "" {
		s.Prefix = DefaultStorePrefix
	}
	if !strings.HasPrefix(s.Prefix, "/") {
		return plugins.InvalidField("store.prefix", s.Prefix, `must start with "/"`)
	}
	s.Prefix = strings.TrimSuffix(s.Prefix, "/")
	return nil
}

// ipamOwned are the ipam fields the overlay fills itself.
var ipamOwned = []string{"ranges", "subnet", "rangeStart", "rangeEnd", "gateway", "routes", "addresses"}

func (c *Conf) validateIPAM() error {
	if len(c.IPAMRaw) == 0 || string(c.IPAMRaw) == "null" {
		return nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(c.IPAMRaw, &m); err != nil {
		return plugins.InvalidField("ipam", string(c.IPAMRaw), "must be an object")
	}
	if raw, ok := m["type"]; ok {
		var t string
		if json.Unmarshal(raw, &t) != nil || (t != "" && t != MoorIPAM) {
			return plugins.UnsupportedField("ipam.type", strings.Trim(string(raw), `"`), "the overlay allocates from the host's subnet in process; only moor-ipam is supported")
		}
	}
	for _, k := range ipamOwned {
		if v, ok := m[k]; ok {
			return plugins.UnsupportedField("ipam."+k, string(v), "the overlay sets the host's subnet, gateway and routes itself")
		}
	}
	return nil
}

// DefaultGateway reports whether containers get a default route (isDefaultGateway, default true).
func (c *Conf) DefaultGateway() bool { return c.IsDefaultGateway == nil || *c.IsDefaultGateway }

// ResolveHostID returns the host ID: override when set, else the config's hostID, else the
// content of hostIDFile.
func (c *Conf) ResolveHostID(override string) (string, error) {
	id := override
	if id == "" {
		id = c.HostID
	}
	if id == "" {
		data, err := os.ReadFile(c.HostIDFile)
		if err != nil {
			return "", plugins.InvalidField("hostIDFile", c.HostIDFile, "cannot be read and no hostID is set: "+err.Error())
		}
		id = strings.TrimSpace(string(data))
	}
	if err := ValidHostID(id); err != nil {
		return "", plugins.InvalidField("hostID", id, err.Error())
	}
	return id, nil
}

// ValidHostID checks a host ID.
func ValidHostID(id string) error {
	if len(id) == 0 || len(id) > maxHostIDLen {
		return fmt.Errorf("must be 1 to %d characters", maxHostIDLen)
	}
	if !hostIDPattern.MatchString(id) {
		return errors.New("must start with a letter or digit and contain only letters, digits, '.', '_' and '-'")
	}
	return nil
}

func duration(field, v string, def time.Duration) (time.Duration, error) {
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, plugins.InvalidField(field, v, `must be a positive duration such as "5s"`)
	}
	return d, nil
}
