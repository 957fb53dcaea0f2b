package conflist

import (
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"

	"github.com/containernetworking/cni/pkg/utils"
)

// kind is the JSON type of a driver option.
type kind int

const (
	kindString kind = iota
	kindInt
	kindBool
)

// option is one --opt key a driver accepts and the config field it sets.
type option struct {
	field string
	kind  kind
	check func(v string) error // optional
}

// mtuMin and mtuMax bound an MTU (RFC 791 minimum; the kernel's maximum).
const (
	mtuMin  = 68
	mtuMax  = 65535
	vlanMax = 4094
)

func checkMTU(v string) error {
	n, _ := strconv.Atoi(v)
	if n < mtuMin || n > mtuMax {
		return fmt.Errorf("must be between %d and %d", mtuMin, mtuMax)
	}
	return nil
}

func checkIfName(v string) error {
	if e := utils.ValidateInterfaceName(v); e != nil {
		return fmt.Errorf("%s", e.Msg)
	}
	return nil
}

func oneOf(values ...string) func(string) error {
	return func(v string) error {
		for _, ok := range values {
			if v == ok {
				return nil
			}
		}
		return fmt.Errorf("must be one of %s", strings.Join(values, ", "))
	}
}

var gatewayModes = oneOf("nat", "routed", "isolated")

// checkIPv accepts an IP address of the given version (4 or 6; 0: either).
func checkIPv(version int) func(string) error {
	return func(v string) error {
		ip := net.ParseIP(v)
		switch {
		case ip == nil:
			return fmt.Errorf("not an IP address")
		case version == 4 && ip.To4() == nil, version == 6 && ip.To4() != nil:
			return fmt.Errorf("not an IPv%d address", version)
		}
		return nil
	}
}

func checkVlan(v string) error {
	n, _ := strconv.Atoi(v)
	if n < 0 || n > vlanMax {
		return fmt.Errorf("must be between 0 and %d", vlanMax)
	}
	return nil
}

// driverOptions are the --opt keys of each driver: the plugin's own field names, and
// Docker's names where Docker has one.
var driverOptions = map[string]map[string]option{
	"bridge": {
		"bridge":                         {field: "bridge", check: checkIfName},
		"com.docker.network.bridge.name": {field: "bridge", check: checkIfName},
		"mtu":                            {field: "mtu", kind: kindInt, check: checkMTU},
		"com.docker.network.driver.mtu":  {field: "mtu", kind: kindInt, check: checkMTU},
		"ipMasq":                         {field: "ipMasq", kind: kindBool},
		"com.docker.network.bridge.enable_ip_masquerade": {field: "ipMasq", kind: kindBool},
		"isolation":                    {field: "isolation", kind: kindBool},
		"hairpinMode":                  {field: "hairpinMode", kind: kindBool},
		"promiscMode":                  {field: "promiscMode", kind: kindBool},
		"portIsolation":                {field: "portIsolation", kind: kindBool},
		"macspoofchk":                  {field: "macspoofchk", kind: kindBool},
		"enabledad":                    {field: "enabledad", kind: kindBool},
		"forceAddress":                 {field: "forceAddress", kind: kindBool},
		"vlan":                         {field: "vlan", kind: kindInt, check: checkVlan},
		"firewallBackend":              {field: "firewallBackend", check: oneOf("nftables", "iptables")},
		"preserveDefaultVlan":          {field: "preserveDefaultVlan", kind: kindBool},
		"icc":                          {field: "icc", kind: kindBool},
		"gatewayModeIPv4":              {field: "gatewayModeIPv4", check: gatewayModes},
		"gatewayModeIPv6":              {field: "gatewayModeIPv6", check: gatewayModes},
		"hostBindingIPv4":              {field: "hostBindingIPv4", check: checkIPv(4)},
		"hostBindingIPv6":              {field: "hostBindingIPv6", check: checkIPv(6)},
		"snatAddress":                  {field: "snatAddress", check: checkIPv(0)},
		"snatAddressIPv6":              {field: "snatAddressIPv6", check: checkIPv(6)},
		"com.docker.network.host_ipv4": {field: "snatAddress", check: checkIPv(4)},
		"com.docker.network.host_ipv6": {field: "snatAddressIPv6", check: checkIPv(6)},
	},
	"macvlan": {
		"icc":          {field: "icc", kind: kindBool},
		"parent":       {field: "master", check: checkIfName},
		"master":       {field: "master", check: checkIfName},
		"macvlan_mode": {field: "mode", check: oneOf("bridge", "private", "vepa", "passthru")},
		"mode":         {field: "mode", check: oneOf("bridge", "private", "vepa", "passthru")},
		"mtu":          {field: "mtu", kind: kindInt, check: checkMTU},
		"hostShim":     {field: "hostShim", kind: kindBool},
	},
	"host": {
		"device": {field: "device"},
	},
	"none": {},
}

// dockerBridgeNames are Docker's names of bridge options that mean the same as moor's.
var dockerBridgeNames = map[string]string{
	"com.docker.network.bridge.enable_icc":        "icc",
	"com.docker.network.bridge.gateway_mode_ipv4": "gatewayModeIPv4",
	"com.docker.network.bridge.gateway_mode_ipv6": "gatewayModeIPv6",
	"com.docker.network.bridge.host_binding_ipv4": "hostBindingIPv4",
	"com.docker.network.bridge.host_binding_ipv6": "hostBindingIPv6",
}

// gatewayOptions are the bridge's options that need a gateway moor owns.
var gatewayOptions = []string{"gatewayModeIPv4", "gatewayModeIPv6", "hostBindingIPv4", "hostBindingIPv6", "snatAddress", "snatAddressIPv6"}

// refusedOptions are keys a driver refuses with a reason (not merely "unknown"): options
// of another driver that users carry over and expect to work.
var refusedOptions = map[string]map[string]string{"macvlan": {}}

func init() {
	for docker, own := range dockerBridgeNames {
		driverOptions["bridge"][docker] = driverOptions["bridge"][own]
	}
	for key, opt := range driverOptions["bridge"] {
		for _, g := range gatewayOptions {
			if opt.field == g {
				refusedOptions["macvlan"][key] = "does not apply to the macvlan driver: the network's gateway is the LAN's router, and moor-macvlan neither masquerades nor publishes ports"
			}
		}
	}
	refusedOptions["macvlan"]["com.docker.network.bridge.enable_icc"] = `is the bridge driver's name; the macvlan driver's is "icc" (false: mode private)`
}

// OptionKeys lists the --opt keys a driver accepts, sorted (for help and messages).
func OptionKeys(driver string) []string {
	var keys []string
	for k := range driverOptions[driver] {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// driverFields turns --opt pairs into config fields, in the order given; a later pair
// for the same field replaces the earlier one.
func driverFields(driver string, opts []KV) (object, error) {
	table := driverOptions[driver]
	var out object
	for _, kv := range opts {
		opt, ok := table[kv.Key]
		if reason, refused := refusedOptions[driver][kv.Key]; !ok && refused {
			return nil, &InvalidError{Flag: "--opt", Value: kv.Key + "=" + kv.Value, Reason: reason}
		}
		if !ok {
			accepted := "none"
			if keys := OptionKeys(driver); len(keys) > 0 {
				accepted = strings.Join(keys, ", ")
			}
			return nil, &InvalidError{Flag: "--opt", Value: kv.Key + "=" + kv.Value,
				Reason: fmt.Sprintf("unknown option for the %s driver (accepted: %s)", driver, accepted)}
		}
		v, err := typed(opt, kv.Value)
		if err == nil && opt.check != nil {
			err = opt.check(kv.Value)
		}
		if err != nil {
			return nil, &InvalidError{Flag: "--opt", Value: kv.Key + "=" + kv.Value, Reason: err.Error()}
		}
		out = out.set(opt.field, v)
	}
	return out, nil
}

func typed(opt option, s string) (any, error) {
	switch opt.kind {
	case kindInt:
		n, err := strconv.Atoi(s)
		if err != nil {
			return nil, fmt.Errorf("not an integer")
		}
		return n, nil
	case kindBool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return nil, fmt.Errorf("not a boolean (true or false)")
		}
		return b, nil
	default:
		if s == "" {
			return nil, fmt.Errorf("must not be empty")
		}
		return s, nil
	}
}

// ipamOptions are the --ipam-opt keys: moor-ipam fields that are not ranges.
var ipamOptions = map[string]bool{"dataDir": true, "resolvConf": true}

// field is one key of a JSON object; object keeps the keys in order so that written
// configs read top-down like the documentation.
type field struct {
	Key   string
	Value any
}

type object []field

// set replaces key's value or appends it.
func (o object) set(key string, v any) object {
	for i := range o {
		if o[i].Key == key {
			o[i].Value = v
			return o
		}
	}
	return append(o, field{key, v})
}

// get returns key's value.
func (o object) get(key string) (any, bool) {
	for _, f := range o {
		if f.Key == key {
			return f.Value, true
		}
	}
	return nil, false
}
