package conflist

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/moornet/moor/ipam/config"
)

// Defaults and naming.
const (
	// DefaultConfDir is where CNI runtimes read network configs.
	DefaultConfDir = "/etc/cni/net.d"
	// TypePrefix starts the type of every moor plugin.
	TypePrefix = "moor-"
	// DNSType is the chained DNS plugin.
	DNSType = "moor-dns"
	// IPAMType is moor's IPAM plugin; only its state can be read and removed.
	IPAMType = "moor-ipam"
	// FilePrefix is the order prefix of files written by moor (see the package doc).
	FilePrefix = "60"
	// FileExt is the extension of files written by moor.
	FileExt = ".conflist"
	// ShortIDLen is the length of a truncated network ID, as Docker prints it.
	ShortIDLen = 12
	// BridgeIDLen is how many ID digits a default bridge name carries: "moor-" + 10 = 15,
	// the longest interface name Linux allows.
	BridgeIDLen = 10
	// FileMode is the mode of written config files.
	FileMode os.FileMode = 0o644
	// defaultBridge is moor-bridge's default bridge (the reference plugin's).
	defaultBridge = "cni0"
)

// Drivers moor knows; a type "moor-<driver>" names the driver.
const (
	DriverBridge  = "bridge"
	DriverMacvlan = "macvlan"
	DriverOverlay = "overlay"
	DriverHost    = "host"
	DriverNone    = "none"
)

// confExtensions are the files runtimes read, as libcni lists them.
var confExtensions = []string{".conf", ".conflist", ".json"}

// nameRE is the CNI spec's charset for network names.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.\-]*$`)

// ValidName checks a network name against the CNI spec's charset.
func ValidName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("network name %q: must start with a letter or digit and contain only letters, digits, '_', '.' and '-'", name)
	}
	return nil
}

// ID is the network's ID: the SHA-256 of its name, in hex.
func ID(name string) string {
	sum := sha256.Sum256([]byte(name))
	return hex.EncodeToString(sum[:])
}

// ShortID is the ID truncated as `ls` prints it.
func ShortID(name string) string { return ID(name)[:ShortIDLen] }

// DefaultBridgeName is the bridge `moor network create` names for a network.
func DefaultBridgeName(name string) string { return TypePrefix + ID(name)[:BridgeIDLen] }

// FileName is the file `moor network create` writes for a network.
func FileName(name string) string { return FilePrefix + "-" + TypePrefix + name + FileExt }

// Network is one moor network read from the config directory.
type Network struct {
	Name       string
	ID         string
	File       string    // the file it was read from
	Created    time.Time // the file's modification time
	CNIVersion string
	Type       string // the first plugin's type, e.g. "moor-bridge"
	Driver     string // the type without "moor-"
	List       *libcni.NetworkConfigList
	// Plugin is the first plugin's config, decoded generically.
	Plugin map[string]any
	// Conf holds the driver fields moor needs to find the network's kernel objects.
	Conf DriverConf
	// IPAMType is ipam.type of the first plugin ("" when none).
	IPAMType string
	// IPAM is the parsed ipam section when ipam/config understands it (moor-ipam and
	// host-local style configs); IPAMErr says why not otherwise.
	IPAM    *config.Config
	IPAMErr error
	// DNS is the chained moor-dns entry, nil when the network has none.
	DNS    *DNSConf
	Labels map[string]string
}

// DriverConf is the part of a driver's config that tells where its objects are.
type DriverConf struct {
	Bridge           string `json:"bridge"`
	IsGateway        bool   `json:"isGateway"`
	IsDefaultGateway bool   `json:"isDefaultGateway"`
	IPMasq           bool   `json:"ipMasq"`
	Internal         bool   `json:"internal"`
	Isolation        *bool  `json:"isolation"`
	FirewallBackend  string `json:"firewallBackend"`
	IPMasqBackend    string `json:"ipMasqBackend"`
	MTU              int    `json:"mtu"`
	Master           string `json:"master"`
	Mode             string `json:"mode"`
	Device           string `json:"device"`
	// The bridge's finer options, for the firewall rules the network should have.
	ICC             *bool  `json:"icc"`
	GatewayModeIPv4 string `json:"gatewayModeIPv4"`
	GatewayModeIPv6 string `json:"gatewayModeIPv6"`
	SNATAddress     string `json:"snatAddress"`
	SNATAddressIPv6 string `json:"snatAddressIPv6"`
}

// NoICC reports whether containers of the network are kept apart (icc false).
func (c DriverConf) NoICC() bool { return c.ICC != nil && !*c.ICC }

// Isolated reports whether the network is isolated from other moor bridges (default on).
func (c DriverConf) Isolated() bool { return c.Isolation == nil || *c.Isolation }

// Firewall returns the firewall backend the config names ("" = detect), as moor-bridge
// chooses it: firewallBackend, else ipMasqBackend.
func (c DriverConf) Firewall() string {
	if c.FirewallBackend != "" {
		return c.FirewallBackend
	}
	return c.IPMasqBackend
}

// DNSConf is the chained moor-dns plugin's entry: the fields that say where its records
// live and how its names are served.
type DNSConf struct {
	Domain        string   `json:"domain"`
	Internal      bool     `json:"internal"`
	Upstreams     []string `json:"upstreams"`
	StoreDir      string   `json:"storeDir"`
	ControlSocket string   `json:"controlSocket"`
}

// ShortID is the network's ID truncated.
func (n *Network) ShortID() string { return n.ID[:ShortIDLen] }

// HasMoorIPAM reports whether the network's addresses live in a moor-ipam store.
func (n *Network) HasMoorIPAM() bool { return n.IPAMType == IPAMType && n.IPAM != nil }

// reservedKeys are plugin keys that are not driver options.
var reservedKeys = map[string]bool{
	"type": true, "name": true, "cniVersion": true, "ipam": true, "capabilities": true,
	"runtimeConfig": true, "args": true, "prevResult": true, "dns": true,
}

// Options are the first plugin's driver fields as strings (numbers and booleans in JSON
// form), sorted by key when printed: Docker's "Options".
func (n *Network) Options() map[string]string {
	out := map[string]string{}
	for k, v := range n.Plugin {
		if reservedKeys[k] {
			continue
		}
		if s, ok := v.(string); ok {
			out[k] = s
			continue
		}
		b, err := json.Marshal(v)
		if err != nil {
			continue
		}
		out[k] = string(b)
	}
	return out
}

// IPAMOptions are the ipam section's fields other than type and ranges, as strings.
func (n *Network) IPAMOptions() map[string]string {
	out := map[string]string{}
	ipam, _ := n.Plugin["ipam"].(map[string]any)
	for k, v := range ipam {
		switch k {
		case "type", "ranges", "subnet", "rangeStart", "rangeEnd", "gateway", "addresses":
			continue
		}
		if s, ok := v.(string); ok {
			out[k] = s
			continue
		}
		if b, err := json.Marshal(v); err == nil {
			out[k] = string(b)
		}
	}
	return out
}

// FileError is a config file that could not be read as a network.
type FileError struct {
	File string
	Err  error
}

func (e *FileError) Error() string { return fmt.Sprintf("%s: %v", e.File, e.Err) }

// Unwrap exposes the cause.
func (e *FileError) Unwrap() error { return e.Err }

// DuplicateError is a file naming a network an earlier file already defines; runtimes
// use the earlier one.
type DuplicateError struct {
	Name        string
	File, First string
}

func (e *DuplicateError) Error() string {
	return fmt.Sprintf("%s: network %q is already defined by %s, which runtimes use; remove one of them", e.File, e.Name, e.First)
}

// Load reads every config file of dir and returns its moor networks sorted by name, and
// one error per file it could not read (*FileError) or that repeats a network name
// (*DuplicateError). A missing directory holds no networks.
func Load(dir string) ([]*Network, []error) {
	files, err := libcni.ConfFiles(dir, confExtensions)
	if err != nil {
		return nil, []error{&FileError{File: dir, Err: err}}
	}
	sort.Strings(files)
	var (
		nets  []*Network
		errs  []error
		first = map[string]string{} // network name -> file, over every list, moor or not
	)
	for _, f := range files {
		list, ok, err := readList(f)
		if err != nil {
			errs = append(errs, &FileError{File: f, Err: err})
			continue
		}
		if !ok {
			continue
		}
		if prev, dup := first[list.Name]; dup {
			if isMoor(list) {
				errs = append(errs, &DuplicateError{Name: list.Name, File: f, First: prev})
			}
			continue
		}
		first[list.Name] = f
		if !isMoor(list) {
			continue
		}
		n, err := fromList(f, list)
		if err != nil {
			errs = append(errs, &FileError{File: f, Err: err})
			continue
		}
		nets = append(nets, n)
	}
	sort.Slice(nets, func(i, j int) bool { return nets[i].Name < nets[j].Name })
	return nets, errs
}

// Names maps every network name of dir, moor's or not, to the first file that defines it.
func Names(dir string) (map[string]string, error) {
	files, err := libcni.ConfFiles(dir, confExtensions)
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	out := map[string]string{}
	for _, f := range files {
		if list, ok, err := readList(f); err == nil && ok {
			if _, dup := out[list.Name]; !dup {
				out[list.Name] = f
			}
		}
	}
	return out, nil
}

// readList reads a config list. ok is false for a file that is not one: a single-plugin
// config (no "plugins" key; the format spec 1.0.0 removed), which is never a moor network.
func readList(file string) (list *libcni.NetworkConfigList, ok bool, err error) {
	list, err = libcni.NetworkConfFromFile(file)
	if err == nil {
		return list, true, nil
	}
	if raw, rerr := os.ReadFile(file); rerr == nil {
		if l, perr := libcni.NetworkConfFromBytes(raw); perr == nil && len(l.Plugins) == 0 {
			return nil, false, nil
		}
	}
	return nil, false, err
}

func isMoor(list *libcni.NetworkConfigList) bool {
	return len(list.Plugins) > 0 && strings.HasPrefix(list.Plugins[0].Network.Type, TypePrefix)
}

// Parse reads a network from the bytes of a config list (as written to file).
func Parse(file string, data []byte) (*Network, error) {
	list, err := libcni.ConfListFromBytes(data)
	if err != nil {
		return nil, err
	}
	if !isMoor(list) {
		return nil, errors.New("not a moor network: the first plugin's type does not start with " + TypePrefix)
	}
	return fromList(file, list)
}

func fromList(file string, list *libcni.NetworkConfigList) (*Network, error) {
	first := list.Plugins[0]
	n := &Network{
		Name:       list.Name,
		ID:         ID(list.Name),
		File:       file,
		CNIVersion: list.CNIVersion,
		Type:       first.Network.Type,
		Driver:     strings.TrimPrefix(first.Network.Type, TypePrefix),
		List:       list,
		IPAMType:   first.Network.IPAM.Type,
	}
	if err := ValidName(n.Name); err != nil {
		return nil, err
	}
	if st, err := os.Stat(file); err == nil {
		n.Created = st.ModTime()
	}
	if err := json.Unmarshal(first.Bytes, &n.Plugin); err != nil {
		return nil, fmt.Errorf("plugins[0]: %w", err)
	}
	if err := json.Unmarshal(first.Bytes, &n.Conf); err != nil {
		return nil, fmt.Errorf("plugins[0] (type %s): %w", n.Type, err)
	}
	if n.Driver == DriverBridge && n.Conf.Bridge == "" {
		n.Conf.Bridge = defaultBridge
	}
	if n.IPAMType != "" {
		n.IPAM, n.IPAMErr = parseIPAM(list, first)
	}
	for i, p := range list.Plugins[1:] {
		if p.Network.Type != DNSType {
			continue
		}
		var d DNSConf
		if err := json.Unmarshal(p.Bytes, &d); err != nil {
			return nil, fmt.Errorf("plugins[%d] (type %s): %w", i+1, DNSType, err)
		}
		n.DNS = &d
		break
	}
	var top struct {
		Moor struct {
			Labels map[string]string `json:"labels"`
		} `json:"moor"`
	}
	if err := json.Unmarshal(list.Bytes, &top); err != nil {
		return nil, fmt.Errorf("moor.labels: %w", err)
	}
	n.Labels = top.Moor.Labels
	return n, nil
}

// parseIPAM parses the ipam section the way moor-ipam does: with the list's name and
// version injected into the plugin's config, as libcni passes them.
func parseIPAM(list *libcni.NetworkConfigList, p *libcni.PluginConfig) (*config.Config, error) {
	var raw map[string]any
	if err := json.Unmarshal(p.Bytes, &raw); err != nil {
		return nil, err
	}
	raw["name"] = list.Name
	raw["cniVersion"] = list.CNIVersion
	b, err := json.Marshal(raw)
	if err != nil {
		return nil, err
	}
	return config.Parse(b)
}
