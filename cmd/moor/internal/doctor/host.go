package doctor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/conflist"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/firewall"
)

// Names of the probe links; they live in a namespace nobody else sees.
const (
	probeBridge  = "mprobe-br"
	probeVeth    = "mprobe-v0"
	probePeer    = "mprobe-v1"
	probeVxlan   = "mprobe-vx"
	probeMacvlan = "mprobe-mv"
	probeWG      = "mprobe-wg"
	probeVNI     = 4242
	vxlanPort    = 4789
)

// Paths read by the host checks.
const (
	ipForwardPath    = "/proc/sys/net/ipv4/ip_forward"
	brNetfilterPath  = "/sys/module/br_netfilter"
	bridgeNFCallPath = "/proc/sys/net/bridge/bridge-nf-call-iptables"
	modulesDir       = "/lib/modules"
	wireguardModule  = "wireguard"
	statusMinVersion = "1.1.0"
)

// probe is one link kind to create.
type probe struct {
	kind string
	link func() netlink.Link
}

func probes() []probe {
	return []probe{
		{"bridge", func() netlink.Link { return &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: probeBridge}} }},
		{"veth", func() netlink.Link {
			return &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: probeVeth}, PeerName: probePeer}
		}},
		{"vxlan", func() netlink.Link {
			return &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: probeVxlan}, VxlanId: probeVNI, Port: vxlanPort}
		}},
		{"macvlan", func() netlink.Link {
			// on the veth made before it
			return &netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: probeMacvlan}, Mode: netlink.MACVLAN_MODE_BRIDGE}
		}},
		// creating one makes the kernel load the module when it can (module autoload)
		{wireguardModule, func() netlink.Link { return &netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: probeWG}} }},
	}
}

// probeLinks creates each probe link in a new network namespace owned by one locked
// thread; the thread is never unlocked, so the runtime ends it with the goroutine and the
// namespace (and everything in it) goes with it. It returns the error per kind.
func probeLinks() map[string]error {
	out := map[string]error{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread dies in the probe namespace
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			for _, p := range probes() {
				out[p.kind] = fmt.Errorf("creating a probe network namespace: %w", err)
			}
			return
		}
		h, err := netlinksafe.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			for _, p := range probes() {
				out[p.kind] = err
			}
			return
		}
		defer h.Close()
		for _, p := range probes() {
			l := p.link()
			if mv, ok := l.(*netlink.Macvlan); ok {
				parent, err := h.LinkByName(probeVeth)
				if err != nil {
					out[p.kind] = fmt.Errorf("no veth to put a macvlan on: %w", err)
					continue
				}
				mv.ParentIndex = parent.Attrs().Index
			}
			out[p.kind] = h.LinkAdd(l)
		}
	}()
	<-done
	return out
}

// kernel reports which link kinds the kernel can create.
func (d *Doctor) kernel(r *Report) {
	hasMacvlan := false
	for _, n := range d.Networks {
		hasMacvlan = hasMacvlan || n.Driver == conflist.DriverMacvlan
	}
	wgLoaded := moduleLoaded(wireguardModule) // before the probe loads it
	results := probeLinks()
	for _, p := range probes() {
		err := results[p.kind]
		if p.kind == wireguardModule {
			d.wireguard(r, err, wgLoaded)
			continue
		}
		if err == nil {
			d.add(r, Finding{Severity: OK, Area: AreaKernel, Message: p.kind + " links can be created"})
			continue
		}
		f := Finding{Severity: Problem, Area: AreaKernel, Message: fmt.Sprintf("%s links cannot be created: %v", p.kind, err),
			Advice: fmt.Sprintf("load the kernel module (modprobe %s) or use a kernel built with it", p.kind)}
		switch {
		case p.kind == "vxlan":
			f.Severity = Info
			f.Advice += "; only overlay networks need it"
		case p.kind == "macvlan" && !hasMacvlan:
			f.Severity = Info
			f.Advice += "; only macvlan networks need it"
		}
		d.add(r, f)
	}
}

// wireguard reports the WireGuard probe: whether the module was loaded, loadable, or
// missing (and then whether the kernel's module tree has it at all). Only encrypted
// overlay networks need it: its absence is a problem when such a network exists.
func (d *Doctor) wireguard(r *Report, err error, wasLoaded bool) {
	const need = `encrypted overlay networks (moor-overlay "encryption": "wireguard") need it`
	if err == nil {
		how := "loaded on demand by the probe"
		if wasLoaded {
			how = "already loaded"
		}
		d.add(r, Finding{Severity: OK, Area: AreaKernel, Message: fmt.Sprintf("wireguard links can be created (module %s %s): %s", wireguardModule, how, need)})
		return
	}
	var encrypted []string
	for _, n := range d.Networks {
		if n.Driver == conflist.DriverOverlay && n.Plugin["encryption"] == wireguardModule {
			encrypted = append(encrypted, n.Name)
		}
	}
	f := Finding{Severity: Info, Area: AreaKernel,
		Message: fmt.Sprintf("wireguard links cannot be created (%s): %v; %s", moduleOnDisk(wireguardModule), err, need),
		Advice:  "load the kernel module (modprobe " + wireguardModule + ") or use a kernel built with it; clear VXLAN overlays work without it"}
	if len(encrypted) > 0 {
		f.Severity = Problem
		f.Message += "; encrypted here: " + strings.Join(encrypted, ", ")
	}
	d.add(r, f)
}

// moduleLoaded reports whether the kernel has module name loaded or built in.
func moduleLoaded(name string) bool {
	_, err := os.Stat(filepath.Join("/sys/module", name))
	return err == nil
}

// moduleOnDisk says whether the running kernel's module tree lists module name
// (modules.dep for a loadable one, modules.builtin for one built in).
func moduleOnDisk(name string) string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "kernel release unknown"
	}
	release := unix.ByteSliceToString(u.Release[:])
	dir := filepath.Join(modulesDir, release)
	for _, list := range []string{"modules.dep", "modules.builtin"} {
		b, err := os.ReadFile(filepath.Join(dir, list))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			path, _, _ := strings.Cut(line, ":")
			base := filepath.Base(path)
			if base == name+".ko" || strings.HasPrefix(base, name+".ko.") {
				return fmt.Sprintf("module %s is in %s but could not be used", name, filepath.Join(dir, list))
			}
		}
	}
	return fmt.Sprintf("kernel %s has no module %s", release, name)
}

// firewalls reports which firewall backends work in the host namespace.
func (d *Doctor) firewalls(r *Report) {
	working := 0
	status := map[string]error{}
	for _, kind := range []string{firewall.KindNFTables, firewall.KindIPTables} {
		b, err := firewall.New(kind, firewall.Options{NetNS: d.Host.NS()})
		if err == nil {
			err = b.Status()
		}
		status[kind] = err
		if err == nil {
			working++
			d.add(r, Finding{Severity: OK, Area: AreaFirewall, Message: kind + " is usable"})
			continue
		}
		d.add(r, Finding{Severity: Info, Area: AreaFirewall, Message: fmt.Sprintf("%s is not usable: %v", kind, err)})
	}
	bridges := false
	for _, n := range d.Networks {
		if n.Driver != conflist.DriverBridge {
			continue
		}
		bridges = true
		if kind := n.Conf.Firewall(); kind != "" && status[kind] != nil {
			d.add(r, Finding{Severity: Problem, Area: AreaFirewall, Network: n.Name,
				Message: fmt.Sprintf("the network asks for the %s backend, which is not usable here", kind),
				Advice:  "install and enable it, or drop firewallBackend from " + n.File})
		}
	}
	if working == 0 && bridges {
		d.add(r, Finding{Severity: Problem, Area: AreaFirewall, Message: "no firewall backend is usable: bridge networks cannot masquerade, isolate or publish ports",
			Advice: "install nftables (kernel nf_tables) or iptables"})
	}
}

// sysctls reports ip_forward and br_netfilter.
func (d *Doctor) sysctls(r *Report) {
	var fwd string
	err := d.Host.Do(func() error {
		b, err := os.ReadFile(ipForwardPath)
		fwd = strings.TrimSpace(string(b))
		return err
	})
	switch {
	case err != nil:
		d.add(r, Finding{Severity: Info, Area: AreaKernel, Message: fmt.Sprintf("cannot read net.ipv4.ip_forward: %v", err)})
	case fwd == "1":
		d.add(r, Finding{Severity: OK, Area: AreaKernel, Message: "net.ipv4.ip_forward is 1"})
	default:
		d.add(r, Finding{Severity: Info, Area: AreaKernel, Message: "net.ipv4.ip_forward is " + fwd + ": moor-bridge turns it on with a network's first container",
			Advice: "if something turns it off again, containers lose the outside: sysctl -w net.ipv4.ip_forward=1"})
	}
	if _, err := os.Stat(brNetfilterPath); err != nil {
		d.add(r, Finding{Severity: Info, Area: AreaKernel, Message: "br_netfilter is not loaded: bridged traffic between containers of one network bypasses the ip/ip6 firewall hooks"})
		return
	}
	var call string
	_ = d.Host.Do(func() error {
		b, err := os.ReadFile(bridgeNFCallPath)
		call = strings.TrimSpace(string(b))
		return err
	})
	d.add(r, Finding{Severity: Info, Area: AreaKernel,
		Message: fmt.Sprintf("br_netfilter is loaded (bridge-nf-call-iptables=%s): bridged traffic between containers of one network also crosses the ip/ip6 firewall hooks", call)})
}

// configs reports unreadable files, duplicates, bad ipam sections and STATUS.
func (d *Doctor) configs(r *Report) {
	for _, err := range d.LoadErrors {
		d.add(r, Finding{Severity: Problem, Area: AreaConfig, Message: err.Error(), Advice: "fix or remove the file"})
	}
	for _, n := range d.Networks {
		if n.IPAMErr != nil {
			d.add(r, Finding{Severity: Problem, Area: AreaConfig, Network: n.Name, Message: "ipam section: " + n.IPAMErr.Error(),
				Advice: "fix the ipam section of " + n.File})
		}
		if ok, _ := version.GreaterThanOrEqualTo(n.CNIVersion, statusMinVersion); !ok {
			d.add(r, Finding{Severity: Info, Area: AreaConfig, Network: n.Name,
				Message: fmt.Sprintf("cniVersion %s has no STATUS verb; the config was not checked by its plugins", n.CNIVersion)})
			continue
		}
		if err := d.Runtime.Status(n.List); err != nil {
			d.add(r, Finding{Severity: Problem, Area: AreaConfig, Network: n.Name, Message: "STATUS: " + err.Error(),
				Advice: "the network's next ADD would fail: fix what the plugin names"})
			continue
		}
		d.add(r, Finding{Severity: OK, Area: AreaConfig, Network: n.Name, Message: "STATUS: every plugin is ready"})
	}
}

func isGone(err error) bool { return errors.Is(err, plugins.ErrNetnsGone) }
