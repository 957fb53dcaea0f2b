// Package cnirt is the CLI acting as a CNI runtime: it drives the plugins through libcni
// (with a result cache, as containerd, CRI-O and podman do) from inside the CLI's host
// namespace, so the plugins it execs run there too.
//
// Decisions, and why:
//   - a container is named by its network namespace: a name under /run/netns, or a path.
//     Its container ID is the namespace's name for a name (or a path under /run/netns),
//     else "netns-" and 12 hex digits of a hash of the path; --container-id overrides it.
//     Disconnect derives the same ID from the same argument;
//   - CNI_ARGS are IgnoreUnknown=1 and K8S_POD_NAME=<name> (what podman sends, and what
//     moor-dns and moor-ipam read as the container name); --ip goes as the "ips"
//     capability when the first plugin declares it, else as CNI_ARGS IP= (which moor-ipam
//     and host-local also read); aliases go as the "aliases" capability (the list form of
//     CONVENTIONS.md), published ports as "portMappings";
//   - every libcni call is bounded by Timeout.
//
// What it does not do: create or delete network namespaces.
package cnirt

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/moornet/moor/cmd/moor/internal/hostns"
)

// Defaults.
const (
	DefaultCNIPath = "/opt/cni/bin"
	NetnsDir       = "/run/netns"
	DefaultIfName  = "eth0"
	// Timeout bounds one libcni operation.
	Timeout = 2 * time.Minute
	// derivedIDLen is how many hex digits of a path's hash a derived container ID carries.
	derivedIDLen = 12
	derivedIDPfx = "netns-"
)

// DefaultCacheDir is libcni's result cache.
var DefaultCacheDir = libcni.CacheDir

// containerIDRE is the spec's charset for container IDs.
var containerIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.\-]*$`)

// Runtime runs plugins for the CLI.
type Runtime struct {
	cni  *libcni.CNIConfig
	host *hostns.Host
}

// New returns a runtime finding plugins in paths, caching results in cacheDir, and
// running plugins in host.
func New(paths []string, cacheDir string, host *hostns.Host) *Runtime {
	return &Runtime{cni: libcni.NewCNIConfigWithCacheDir(paths, cacheDir, nil), host: host}
}

func (r *Runtime) do(fn func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	return r.host.Do(func() error { return fn(ctx) })
}

// Add attaches a container (CNI ADD of the whole list) and returns the result.
func (r *Runtime) Add(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) (*current.Result, error) {
	var res types.Result
	err := r.do(func(ctx context.Context) error {
		var err error
		res, err = r.cni.AddNetworkList(ctx, list, rt)
		return err
	})
	if err != nil {
		return nil, err
	}
	return current.NewResultFromResult(res)
}

// Del detaches a container (CNI DEL, with the cached result as prevResult).
func (r *Runtime) Del(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	return r.do(func(ctx context.Context) error { return r.cni.DelNetworkList(ctx, list, rt) })
}

// GC deletes the cached attachments of the list that are not valid, then sends GC with
// the valid list to every plugin (cniVersion 1.1.0 and later).
func (r *Runtime) GC(list *libcni.NetworkConfigList, valid []types.GCAttachment) error {
	if valid == nil {
		valid = []types.GCAttachment{}
	}
	return r.do(func(ctx context.Context) error {
		return r.cni.GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: valid})
	})
}

// Status runs STATUS on every plugin of the list (cniVersion 1.1.0 and later; older lists
// are not asked and report nil).
func (r *Runtime) Status(list *libcni.NetworkConfigList) error {
	return r.do(func(ctx context.Context) error { return r.cni.GetStatusNetworkList(ctx, list) })
}

// Cached lists the attachments of a network in the result cache.
func (r *Runtime) Cached(network string) ([]*libcni.NetworkAttachment, error) {
	all, err := r.cni.GetCachedAttachments("")
	if err != nil {
		return nil, err
	}
	var out []*libcni.NetworkAttachment
	for _, a := range all {
		if a.Network == network {
			out = append(out, a)
		}
	}
	return out, nil
}

// CachedResult returns the cached ADD result of an attachment, nil when there is none.
func (r *Runtime) CachedResult(list *libcni.NetworkConfigList, containerID, ifName string) (*current.Result, error) {
	res, err := r.cni.GetNetworkListCachedResult(list, &libcni.RuntimeConf{ContainerID: containerID, IfName: ifName})
	if err != nil || res == nil {
		return nil, err
	}
	return current.NewResultFromResult(res)
}

// Container identifies a container by its network namespace.
type Container struct {
	Netns string // path
	ID    string
	Name  string
}

// ResolveContainer turns a NETNS argument (a name under /run/netns, or a path) and the
// optional --container-id and --name into a Container.
func ResolveContainer(netns, id, name string) (Container, error) {
	c := Container{Netns: netns, ID: id, Name: name}
	if !strings.Contains(netns, "/") {
		c.Netns = filepath.Join(NetnsDir, netns)
	}
	c.Netns = filepath.Clean(c.Netns)
	base := filepath.Base(c.Netns)
	inNetnsDir := filepath.Dir(c.Netns) == NetnsDir || filepath.Dir(c.Netns) == "/var"+NetnsDir
	if c.ID == "" {
		if inNetnsDir && containerIDRE.MatchString(base) {
			c.ID = base
		} else {
			sum := sha256.Sum256([]byte(c.Netns))
			c.ID = derivedIDPfx + hex.EncodeToString(sum[:])[:derivedIDLen]
		}
	}
	if !containerIDRE.MatchString(c.ID) {
		return c, fmt.Errorf("container ID %q: must start with a letter or digit and contain only letters, digits, '_', '.' and '-'", c.ID)
	}
	if c.Name == "" {
		c.Name = c.ID
		if inNetnsDir {
			c.Name = base
		}
	}
	return c, nil
}

// Attach is what `moor network connect` asks for besides the container.
type Attach struct {
	IfName  string
	IPs     []string
	Aliases []string
	Publish []string
	// IPsCapability: the first plugin declares "ips" (else --ip goes as CNI_ARGS IP=).
	IPsCapability bool
}

// RuntimeConf builds the libcni call for a container.
func RuntimeConf(c Container, a Attach) (*libcni.RuntimeConf, error) {
	ifName := a.IfName
	if ifName == "" {
		ifName = DefaultIfName
	}
	rt := &libcni.RuntimeConf{
		ContainerID:    c.ID,
		NetNS:          c.Netns,
		IfName:         ifName,
		Args:           [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAME", c.Name}},
		CapabilityArgs: map[string]any{},
	}
	if len(a.IPs) > 0 {
		if a.IPsCapability {
			rt.CapabilityArgs["ips"] = a.IPs
		} else {
			rt.Args = append(rt.Args, [2]string{"IP", strings.Join(a.IPs, ",")})
		}
	}
	if len(a.Aliases) > 0 {
		rt.CapabilityArgs["aliases"] = a.Aliases
	}
	if len(a.Publish) > 0 {
		var ports []map[string]any
		for _, p := range a.Publish {
			pm, err := ParsePublish(p)
			if err != nil {
				return nil, err
			}
			ports = append(ports, pm)
		}
		rt.CapabilityArgs["portMappings"] = ports
	}
	return rt, nil
}

// ParsePublish reads [hostIP:]hostPort:containerPort[/proto] (Docker's -p form) into a
// portMappings entry.
func ParsePublish(s string) (map[string]any, error) {
	spec, proto, hasProto := strings.Cut(s, "/")
	if !hasProto {
		proto = "tcp"
	}
	switch proto {
	case "tcp", "udp", "sctp":
	default:
		return nil, fmt.Errorf("--publish %q: protocol %q must be tcp, udp or sctp", s, proto)
	}
	i := strings.LastIndex(spec, ":")
	if i < 0 {
		return nil, fmt.Errorf("--publish %q: want [hostIP:]hostPort:containerPort[/proto]", s)
	}
	left, cport := spec[:i], spec[i+1:]
	hostIP, hport := "", left
	if j := strings.LastIndex(left, ":"); j >= 0 {
		hostIP, hport = strings.Trim(left[:j], "[]"), left[j+1:]
	}
	pm := map[string]any{"protocol": proto}
	for _, p := range []struct{ key, value string }{{"hostPort", hport}, {"containerPort", cport}} {
		n, err := strconv.Atoi(p.value)
		const maxPort = 65535
		if err != nil || n < 1 || n > maxPort {
			return nil, fmt.Errorf("--publish %q: %s %q is not a port number (1-65535)", s, p.key, p.value)
		}
		pm[p.key] = n
	}
	if hostIP != "" {
		pm["hostIP"] = hostIP
	}
	return pm, nil
}
