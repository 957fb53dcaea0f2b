package main

import (
	"os"

	"errors"
	"net"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/firewall"
)

// fwNetwork describes the network to the firewall: its subnets are those of the
// attachment's addresses (every attachment of a network has one in each).
func fwNetwork(c *conf, res *current.Result) firewall.Network {
	n := firewall.Network{Name: c.Name, Bridge: c.BrName, IPMasq: c.IPMasq && !c.Internal, Internal: c.Internal, Isolate: c.isolated()}
	c.fineNetwork(&n)
	for _, ipc := range res.IPs {
		n.Subnets = append(n.Subnets, &net.IPNet{IP: ipc.Address.IP.Mask(ipc.Address.Mask), Mask: ipc.Address.Mask})
		if c.gatewayOnBridge(ipc) {
			n.Gateways = append(n.Gateways, ipc.Gateway) // on the bridge: its port 53 is the DNS sidecar's
		}
	}
	return n
}

func fwAttachment(call *plugins.Call, c *conf, res *current.Result) (firewall.Attachment, error) {
	a := firewall.Attachment{Network: c.Name, ContainerID: call.ContainerID, IfName: call.IfName, LoopbackToo: c.PublishLoopback}
	for _, ipc := range res.IPs {
		a.IPs = append(a.IPs, ipc.Address.IP)
	}
	var err error
	a.Ports, err = c.portMappings(res)
	return a, err
}

func openFirewall(c *conf) (firewall.Backend, error) {
	// A runtime that reserved the ports it publishes names its processes (moor-netavark).
	return firewall.New(c.FirewallBackend, firewall.Options{LockFile: c.fwLock, PortReservers: firewall.PortReserversFromEnv(os.Getenv)})
}

// setupFirewall ensures the network's rules and publishes the attachment's ports, in one
// batch. When this ADD created the bridge, the network is new: its rules go with a
// rollback.
func setupFirewall(call *plugins.Call, c *conf, res *current.Result, newNetwork bool, undo *plugins.Undo) error {
	if len(res.IPs) == 0 {
		return nil // L2-only network: nothing to masquerade, isolate or publish
	}
	fw, err := openFirewall(c)
	if err != nil {
		return err
	}
	n := fwNetwork(c, res)
	if err := firewall.ApplySysctls(nil, firewall.RequiredSysctls(n)); err != nil {
		return err
	}
	a, err := fwAttachment(call, c, res)
	if err != nil {
		return err
	}
	if len(a.Ports) == 0 {
		err = fw.EnsureNetwork(n)
	} else {
		err = fw.AddAttachment(n, a) // ensures the network too, in the same batch
	}
	if err != nil {
		return err
	}
	if newNetwork {
		undo.Push("remove network rules", func() error { return fw.RemoveNetwork(c.Name) })
	}
	if len(a.Ports) > 0 {
		undo.Push("remove published ports", func() error { return fw.DelAttachment(c.Name, call.ContainerID, call.IfName) })
	}
	return nil
}

// setupMacSpoof drops frames from the container's port whose source MAC is not its own.
func setupMacSpoof(call *plugins.Call, c *conf, hostIf string, mac net.HardwareAddr, undo *plugins.Undo) error {
	m := firewall.MacSpoof{Network: c.Name, ContainerID: call.ContainerID, IfName: call.IfName, HostIf: hostIf, MAC: mac}
	if err := firewall.AddMacSpoof(firewall.Options{LockFile: c.fwLock}, m); err != nil {
		return err
	}
	undo.Push("remove macspoof rule", func() error {
		return firewall.DelMacSpoof(firewall.Options{LockFile: c.fwLock}, c.Name, call.ContainerID, call.IfName)
	})
	return nil
}

// gcMacSpoof removes the MAC spoof rules of attachments not in valid.
func gcMacSpoof(c *conf, valid []firewall.AttachmentKey) error {
	opts := firewall.Options{LockFile: c.fwLock}
	have, err := firewall.MacSpoofAttachments(opts, c.Name)
	if err != nil {
		return err
	}
	keep := map[firewall.AttachmentKey]bool{}
	for _, k := range valid {
		keep[k] = true
	}
	var errs []error
	for _, k := range have {
		if !keep[k] {
			errs = append(errs, firewall.DelMacSpoof(opts, k.Network, k.ContainerID, k.IfName))
		}
	}
	return errors.Join(errs...)
}
