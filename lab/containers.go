package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/miekg/dns"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// Container tuning.
const (
	cniTimeout   = 60 * time.Second
	pingTimeout  = 2 * time.Second
	dnsTimeout   = 2 * time.Second
	icmpProtocol = 1
)

// cni is the runtime of host h: its plugins run with the host's environment (Host.env)
// added to the caller's, as its services do.
func (l *Lab) cni(h *Host) *libcni.CNIConfig {
	exec := &hostExec{Exec: &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}}, env: h.env()}
	return libcni.NewCNIConfigWithCacheDir([]string{l.BinDir}, filepath.Join(h.Dir, "cni-cache"), exec)
}

// hostExec runs plugins as libcni does, with env added to their environment (a later
// entry of a key wins over the caller's).
type hostExec struct {
	invoke.Exec
	env []string
}

func (e *hostExec) ExecPlugin(ctx context.Context, pluginPath string, stdinData []byte, environ []string) ([]byte, error) {
	return e.Exec.ExecPlugin(ctx, pluginPath, stdinData, append(environ, e.env...))
}

func (l *Lab) runtimeConf(c *Container, ifName string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: c.ContainerID,
		NetNS:       netnsPath(c.Netns),
		IfName:      ifName,
		Args:        [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAME", c.Name}},
	}
}

func (l *Lab) list(h *Host, network string) (*libcni.NetworkConfigList, error) {
	return libcni.ConfListFromFile(l.conflistPath(h, network))
}

// addContainer makes the container's namespace and attaches it to its networks.
func (l *Lab) addContainer(ctx context.Context, host string, spec ContainerSpec) error {
	_, err := l.AddContainer(ctx, host, spec)
	return err
}

// AddContainer creates a container on host and attaches it (ADD through libcni, the
// plugins running in the host's namespace), and returns it with its addresses.
func (l *Lab) AddContainer(ctx context.Context, host string, spec ContainerSpec) (Container, error) {
	h, err := l.host(host)
	if err != nil {
		return Container{}, err
	}
	c := Container{Name: spec.Name, Host: host, Netns: l.Name + "." + host + "." + spec.Name, ContainerID: l.Name + "-" + spec.Name}
	for i, n := range l.Spec.NetworksOf(spec) {
		c.Attachments = append(c.Attachments, Attachment{Network: n.Name, IfName: "eth" + strconv.Itoa(i)})
	}
	l.mu.Lock()
	l.Containers = append(l.Containers, c)
	idx := len(l.Containers) - 1
	l.mu.Unlock()
	if err := addNetns(c.Netns); err != nil {
		return c, err
	}
	if err := l.attachAll(ctx, h, &l.Containers[idx]); err != nil {
		return l.Containers[idx], err
	}
	return l.Containers[idx], l.save()
}

func (l *Lab) attachAll(ctx context.Context, h *Host, c *Container) error {
	cni := l.cni(h)
	for i := range c.Attachments {
		a := &c.Attachments[i]
		list, err := l.list(h, a.Network)
		if err != nil {
			return err
		}
		var res *current.Result
		err = inNetns(h.Netns, func() error {
			ctx, cancel := context.WithTimeout(ctx, cniTimeout)
			defer cancel()
			r, err := cni.AddNetworkList(ctx, list, l.runtimeConf(c, a.IfName))
			if err != nil {
				return err
			}
			res, err = current.NewResultFromResult(r)
			return err
		})
		if err != nil {
			return fmt.Errorf("ADD %s to %s on %s: %w", c.Name, a.Network, h.Name, err)
		}
		for _, ipc := range res.IPs {
			if ipc.Address.IP.To4() != nil {
				a.IP = ipc.Address.IP.String()
				if ipc.Gateway != nil {
					a.Gateway = ipc.Gateway.String()
				}
			}
		}
	}
	return nil
}

// reattach runs DEL (from the cache) and ADD again for every network of the container.
func (l *Lab) reattach(ctx context.Context, c *Container) error {
	h, err := l.host(c.Host)
	if err != nil {
		return err
	}
	cni := l.cni(h)
	for _, a := range c.Attachments {
		list, err := l.list(h, a.Network)
		if err != nil {
			return err
		}
		err = inNetns(h.Netns, func() error {
			ctx, cancel := context.WithTimeout(ctx, cniTimeout)
			defer cancel()
			return cni.DelNetworkList(ctx, list, l.runtimeConf(c, a.IfName))
		})
		if err != nil {
			return fmt.Errorf("DEL %s from %s: %w", c.Name, a.Network, err)
		}
		if err := waitLinkGone(c.Netns, a.IfName); err != nil {
			return fmt.Errorf("%s of %s: %w", a.IfName, c.Name, err)
		}
	}
	return l.attachAll(ctx, h, c)
}

// linkGoneWait bounds the wait for the kernel to remove a container's veth end after its
// host end's namespace was deleted: namespace cleanup is asynchronous, and slow on an
// emulated CPU.
const linkGoneWait = 30 * time.Second

// waitLinkGone waits until the namespace has no link named ifName.
func waitLinkGone(netns, ifName string) error {
	deadline := time.Now().Add(linkGoneWait)
	for {
		var present bool
		err := inNetns(netns, func() error {
			_, err := net.InterfaceByName(ifName)
			present = err == nil
			return nil
		})
		if err != nil || !present {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("still present %s after its host's namespace was deleted", linkGoneWait)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// RemoveContainer runs DEL for every network of the container and deletes its namespace.
func (l *Lab) RemoveContainer(ctx context.Context, name string) error {
	c, err := l.container(name)
	if err != nil {
		return err
	}
	h, err := l.host(c.Host)
	if err != nil {
		return err
	}
	var errs []error
	cni := l.cni(h)
	for _, a := range c.Attachments {
		list, err := l.list(h, a.Network)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, inNetns(h.Netns, func() error {
			ctx, cancel := context.WithTimeout(ctx, cniTimeout)
			defer cancel()
			return cni.DelNetworkList(ctx, list, l.runtimeConf(c, a.IfName))
		}))
	}
	errs = append(errs, delNetns(c.Netns))
	l.mu.Lock()
	for i := range l.Containers {
		if l.Containers[i].Name == name {
			l.Containers = append(l.Containers[:i], l.Containers[i+1:]...)
			break
		}
	}
	l.mu.Unlock()
	errs = append(errs, l.save())
	return errors.Join(errs...)
}

func (l *Lab) container(name string) (*Container, error) {
	for i := range l.Containers {
		if l.Containers[i].Name == name {
			return &l.Containers[i], nil
		}
	}
	return nil, fmt.Errorf("lab %s has no container %q", l.Name, name)
}

// Container returns the named container.
func (l *Lab) Container(name string) (Container, error) {
	c, err := l.container(name)
	if err != nil {
		return Container{}, err
	}
	return *c, nil
}

// Ping sends one ICMP echo from inside the container to ip and waits for the reply.
func (l *Lab) Ping(from string, ip netip.Addr) error {
	c, err := l.container(from)
	if err != nil {
		return err
	}
	return pingFrom(c.Netns, ip)
}

// PingFromHost sends one ICMP echo from the host's own namespace.
func (l *Lab) PingFromHost(host string, ip netip.Addr) error {
	h, err := l.host(host)
	if err != nil {
		return err
	}
	return pingFrom(h.Netns, ip)
}

// PingFromLab sends one ICMP echo from the lab's namespace (the underlay's router, which
// knows no route to any overlay subnet: a container that reaches it is masqueraded).
func (l *Lab) PingFromLab(ip netip.Addr) error { return pingFrom(l.State.Netns, ip) }

func pingFrom(netns string, ip netip.Addr) error {
	return inNetns(netns, func() error {
		conn, err := icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		if err != nil {
			return err
		}
		defer conn.Close()
		id := os.Getpid() & 0xffff
		seq := int(time.Now().UnixNano() & 0xffff)
		msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("moor-lab")}}
		data, err := msg.Marshal(nil)
		if err != nil {
			return err
		}
		if _, err := conn.WriteTo(data, &net.IPAddr{IP: net.IP(ip.AsSlice())}); err != nil {
			return fmt.Errorf("ping %s: %w", ip, err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(pingTimeout))
		buf := make([]byte, 1500)
		for {
			n, peer, err := conn.ReadFrom(buf)
			if err != nil {
				return fmt.Errorf("ping %s: no reply: %w", ip, err)
			}
			reply, err := icmp.ParseMessage(icmpProtocol, buf[:n])
			if err != nil || reply.Type != ipv4.ICMPTypeEchoReply {
				continue
			}
			if echo, ok := reply.Body.(*icmp.Echo); ok && echo.Seq == seq && peer.String() == ip.String() {
				return nil
			}
		}
	})
}

// Resolve asks the DNS server at the container's gateway on network for name's A record.
func (l *Lab) Resolve(from, network, name string) (netip.Addr, error) {
	c, err := l.container(from)
	if err != nil {
		return netip.Addr{}, err
	}
	var gw string
	for _, a := range c.Attachments {
		if a.Network == network {
			gw = a.Gateway
		}
	}
	if gw == "" {
		return netip.Addr{}, fmt.Errorf("container %s is not on network %s", from, network)
	}
	var resp *dns.Msg
	err = inNetns(c.Netns, func() error {
		client := dns.Client{Net: "udp", Timeout: dnsTimeout}
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(name), dns.TypeA)
		var err error
		resp, _, err = client.Exchange(m, net.JoinHostPort(gw, "53"))
		return err
	})
	if err != nil {
		return netip.Addr{}, fmt.Errorf("resolving %s from %s: %w", name, from, err)
	}
	for _, rr := range resp.Answer {
		if a, ok := rr.(*dns.A); ok {
			addr, _ := netip.AddrFromSlice(a.A)
			return addr.Unmap(), nil
		}
	}
	return netip.Addr{}, fmt.Errorf("resolving %s from %s: %s, no address", name, from, dns.RcodeToString[resp.Rcode])
}
