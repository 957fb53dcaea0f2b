package plugins

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/moornet/moor/plugins/codes"
)

// NetConf is the part of every moor plugin config that the framework understands. A
// plugin's own config struct embeds it and adds its fields:
//
//	type conf struct {
//		plugins.NetConf
//		Bridge string `json:"bridge"`
//	}
//
// and loads with LoadConf(call, &c) after setting its defaults in c.
type NetConf struct {
	CNIVersion   string          `json:"cniVersion,omitempty"`
	Name         string          `json:"name,omitempty"`
	Type         string          `json:"type,omitempty"`
	Capabilities map[string]bool `json:"capabilities,omitempty"`
	IPAM         IPAMConf        `json:"ipam,omitempty"`
	DNS          types.DNS       `json:"dns,omitempty"`

	RawPrevResult    json.RawMessage      `json:"prevResult,omitempty"`
	ValidAttachments []types.GCAttachment `json:"cni.dev/valid-attachments,omitempty"`

	RuntimeConfig RuntimeConfig `json:"runtimeConfig,omitempty"`
	Args          *ArgsConf     `json:"args,omitempty"`

	// LogFile is where the plugin logs ("stderr" for stderr); default /var/log/moor/<plugin>.log.
	LogFile string `json:"logFile,omitempty"`
	// LogLevel is debug, info, warn or error; default info.
	LogLevel string `json:"logLevel,omitempty"`

	// Filled by LoadConf, not read from JSON.
	PrevResult *current.Result `json:"-"`
	CNIArgs    CNIArgs         `json:"-"`
	// MAC is the requested MAC address after precedence (CNI_ARGS < args.cni < runtimeConfig).
	MAC net.HardwareAddr `json:"-"`
	// IPs are the requested addresses after precedence (runtimeConfig.ips, else args.cni.ips,
	// else CNI_ARGS IP=), with the prefix length given ("10.1.2.3/24") or a host prefix
	// ("10.1.2.3" is 10.1.2.3/32).
	IPs []netip.Prefix `json:"-"`
}

// IPAMConf is the ipam section; only its type is read here, the IPAM implementation
// reads the rest from Raw.
type IPAMConf struct {
	Type string `json:"type,omitempty"`
	// Raw is the whole section as given (nil when absent or null).
	Raw json.RawMessage `json:"-"`
}

// UnmarshalJSON decodes the type and keeps the section.
func (c *IPAMConf) UnmarshalJSON(data []byte) error {
	type plain IPAMConf
	if err := json.Unmarshal(data, (*plain)(c)); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Type == reflect.TypeOf(plain{}) {
			te.Type = reflect.TypeOf(IPAMConf{}) // the outer decoder adds the field path
		}
		return err
	}
	if s := strings.TrimSpace(string(data)); s != "null" {
		c.Raw = append(json.RawMessage(nil), data...)
	}
	return nil
}

// MarshalJSON writes the section as given.
func (c IPAMConf) MarshalJSON() ([]byte, error) {
	if c.Raw != nil {
		return c.Raw, nil
	}
	type plain IPAMConf
	return json.Marshal(plain(c))
}

// RuntimeConfig holds the capability arguments moor consumes (CONVENTIONS.md).
type RuntimeConfig struct {
	Mac          string          `json:"mac,omitempty"`
	IPs          []string        `json:"ips,omitempty"`
	PortMappings []PortMapping   `json:"portMappings,omitempty"`
	Aliases      Aliases         `json:"aliases,omitempty"`
	IPRanges     json.RawMessage `json:"ipRanges,omitempty"`
	Bandwidth    json.RawMessage `json:"bandwidth,omitempty"`
	CgroupPath   string          `json:"cgroupPath,omitempty"`
}

// MarshalJSON writes the fields as encoding/json would without it. It exists for decoding:
// encoding/json, the first time it decodes a struct, also builds the encoders of every
// field's type, recursing into struct fields that have no MarshalJSON of their own. With
// one here, a plugin process whose config has no runtimeConfig never analyses this type,
// PortMapping or Aliases (about 20 µs of a plugin's start per struct type).
func (r RuntimeConfig) MarshalJSON() ([]byte, error) {
	type plain RuntimeConfig
	return json.Marshal(plain(r))
}

// PortMapping is one published port. encoding/json matches keys case-insensitively, so
// containerd's capitalised keys (HostPort, ContainerPort, Protocol, HostIP) decode too.
type PortMapping struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP,omitempty"`
}

// Aliases accepts both shapes runtimes send: the spec's list ["a","b"] and podman's map
// {"network": ["a","b"]}. Map reports which networks the map form named.
type Aliases struct {
	List []string
	Map  map[string][]string
}

// UnmarshalJSON decodes either shape.
func (a *Aliases) UnmarshalJSON(data []byte) error {
	trimmed := strings.TrimSpace(string(data))
	if strings.HasPrefix(trimmed, "{") {
		return json.Unmarshal(data, &a.Map)
	}
	return json.Unmarshal(data, &a.List)
}

// MarshalJSON writes the shape that was read.
func (a Aliases) MarshalJSON() ([]byte, error) {
	if a.Map != nil {
		return json.Marshal(a.Map)
	}
	return json.Marshal(a.List)
}

// For returns the aliases that apply to network: the list form, plus the map entry for it.
func (a Aliases) For(network string) []string {
	out := append([]string(nil), a.List...)
	return append(out, a.Map[network]...)
}

// ArgsConf is the `args` convention: args.cni.{ips,mac,labels,name}.
type ArgsConf struct {
	CNI struct {
		IPs    []string          `json:"ips,omitempty"`
		Mac    string            `json:"mac,omitempty"`
		Name   string            `json:"name,omitempty"`
		Labels []json.RawMessage `json:"labels,omitempty"`
	} `json:"cni"`
}

// MarshalJSON writes the fields as encoding/json would without it; see
// RuntimeConfig.MarshalJSON for why it exists.
func (a ArgsConf) MarshalJSON() ([]byte, error) {
	type plain ArgsConf
	return json.Marshal(plain(a))
}

// Conf is implemented by every config struct that embeds NetConf.
type Conf interface{ netConf() *NetConf }

func (n *NetConf) netConf() *NetConf { return n }

// Validator is implemented by plugin configs that check their own fields. Validate runs
// after decoding and after the framework's checks; it may also canonicalise values.
type Validator interface{ Validate(call *Call) error }

// LoadConf decodes the call's config into conf (whose defaults the caller has already set),
// parses prevResult and CNI_ARGS, applies the precedence of requested MAC and addresses,
// and runs conf's own Validate. Errors carry codes: 6 for undecodable content, 7 for a wrong
// value (naming field and value), 4 for bad CNI_ARGS.
func LoadConf(call *Call, conf Conf) error {
	if err := json.Unmarshal(call.StdinData, conf); err != nil {
		return decodeError(err)
	}
	base := conf.netConf()
	if err := base.parsePrevResult(); err != nil {
		return err
	}
	args, err := ParseCNIArgs(call.Args)
	if err != nil {
		return err
	}
	base.CNIArgs = args
	if err := base.resolveRequests(); err != nil {
		return err
	}
	if v, ok := conf.(Validator); ok {
		if err := v.Validate(call); err != nil {
			return err
		}
	}
	call.loaded, call.loadedFrom = base, call.StdinData
	return nil
}

// Conf returns the config LoadConf loaded from this call's stdin, so that code running
// later in the same call (IPAM in process) reads it without parsing it again; nil before
// LoadConf, or when StdinData was replaced since (a driver handing IPAM a rewritten
// config).
func (c *Call) Conf() *NetConf {
	if c.loaded == nil || len(c.StdinData) != len(c.loadedFrom) ||
		len(c.StdinData) > 0 && &c.StdinData[0] != &c.loadedFrom[0] {
		return nil
	}
	return c.loaded
}

func (n *NetConf) parsePrevResult() error {
	if len(n.RawPrevResult) == 0 || string(n.RawPrevResult) == "null" {
		return nil
	}
	res, err := version.NewResult(n.CNIVersion, n.RawPrevResult)
	if err != nil {
		return codes.Wrap(codes.DecodingFailure, "decoding prevResult", err)
	}
	conv, err := current.NewResultFromResult(res)
	if err != nil {
		return codes.Wrap(codes.DecodingFailure, "converting prevResult", err)
	}
	n.PrevResult = conv
	return nil
}

// unicastMAC refuses what the kernel refuses as a link's address (EADDRNOTAVAIL): a
// multicast (or broadcast) address and the all-zero one.
func unicastMAC(field string, mac net.HardwareAddr) error {
	if mac[0]&1 != 0 {
		return InvalidField(field, mac.String(), "a multicast address cannot be a link's MAC")
	}
	if bytes.Equal(mac, make(net.HardwareAddr, len(mac))) {
		return InvalidField(field, mac.String(), "the all-zero address cannot be a link's MAC")
	}
	return nil
}

// resolveRequests applies the precedence config < args.cni < runtimeConfig.
func (n *NetConf) resolveRequests() error {
	macSources := []struct{ field, value string }{
		{"runtimeConfig.mac", n.RuntimeConfig.Mac},
		{"args.cni.mac", n.argsMAC()},
		{"CNI_ARGS MAC", n.CNIArgs.Get("MAC")},
	}
	for _, src := range macSources {
		if src.value == "" {
			continue
		}
		mac, err := net.ParseMAC(src.value)
		if err != nil || len(mac) != 6 {
			return InvalidField(src.field, src.value, "not a 48-bit MAC address")
		}
		if err := unicastMAC(src.field, mac); err != nil {
			return err
		}
		n.MAC = mac
		break
	}
	ipSources := []struct {
		field  string
		values []string
	}{
		{"runtimeConfig.ips", n.RuntimeConfig.IPs},
		{"args.cni.ips", n.argsIPs()},
		{"CNI_ARGS IP", SplitList(n.CNIArgs.Get("IP"))},
	}
	for _, src := range ipSources {
		if len(src.values) == 0 {
			continue
		}
		for _, v := range src.values {
			p, ok := parseIPOrCIDR(v)
			if !ok {
				return InvalidField(src.field, v, "not an IP address or CIDR")
			}
			n.IPs = append(n.IPs, p)
		}
		break
	}
	return nil
}

func (n *NetConf) argsMAC() string {
	if n.Args == nil {
		return ""
	}
	return n.Args.CNI.Mac
}

func (n *NetConf) argsIPs() []string {
	if n.Args == nil {
		return nil
	}
	return n.Args.CNI.IPs
}

// ContainerName is the container's name as runtimes pass it: args.cni.name, else
// CNI_ARGS K8S_POD_NAME (which podman fills with the container name).
func (n *NetConf) ContainerName() string {
	if n.Args != nil && n.Args.CNI.Name != "" {
		return n.Args.CNI.Name
	}
	return n.CNIArgs.Get("K8S_POD_NAME")
}

// SplitList splits a comma-separated list (CNI_ARGS IP=, GATEWAY=), dropping blanks.
func SplitList(s string) []string {
	if s == "" {
		return nil
	}
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// parseIPOrCIDR accepts "10.0.0.5" (a host prefix) and "10.0.0.5/24" (capability ips
// carries CIDRs); the address is kept, not masked.
func parseIPOrCIDR(s string) (netip.Prefix, bool) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()), true
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), true
}

// CNIArgs is the parsed CNI_ARGS (K=V;K2=V2).
type CNIArgs map[string]string

// Get returns the value of key, or "".
func (a CNIArgs) Get(key string) string { return a[key] }

// KnownCNIArgs are the CNI_ARGS keys moor reads. Any other key is an error unless
// IgnoreUnknown is set, as the spec's convention requires.
var KnownCNIArgs = map[string]bool{
	"IgnoreUnknown":              true,
	"IP":                         true,
	"MAC":                        true,
	"GATEWAY":                    true,
	"K8S_POD_NAME":               true,
	"K8S_POD_NAMESPACE":          true,
	"K8S_POD_INFRA_CONTAINER_ID": true,
	"K8S_POD_UID":                true,
}

// ParseCNIArgs parses CNI_ARGS. A malformed pair or an unknown key without IgnoreUnknown
// is code 4 naming the pair.
func ParseCNIArgs(raw string) (CNIArgs, error) {
	args := CNIArgs{}
	if raw == "" {
		return args, nil
	}
	for _, pair := range strings.Split(raw, ";") {
		if pair == "" {
			continue
		}
		key, value, ok := strings.Cut(pair, "=")
		if !ok || key == "" {
			return nil, InvalidEnv(fmt.Sprintf("CNI_ARGS: %q is not KEY=VALUE", pair))
		}
		args[key] = value
	}
	ignore := strings.EqualFold(args["IgnoreUnknown"], "true") || args["IgnoreUnknown"] == "1"
	if !ignore {
		for key := range args {
			if !KnownCNIArgs[key] {
				return nil, InvalidEnv(fmt.Sprintf("CNI_ARGS: unknown key %q (set IgnoreUnknown=1 to ignore it)", key))
			}
		}
	}
	return args, nil
}

// RequirePrevResult is CHECK's precondition: the cached result of the ADD (code 7 without).
func (n *NetConf) RequirePrevResult() error {
	if n.PrevResult == nil {
		return InvalidField("prevResult", "", "CHECK needs the result of the ADD")
	}
	return nil
}
