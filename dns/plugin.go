package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/moornet/moor/dns/records"
	"github.com/moornet/moor/dns/server"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
)

// Design notes.
//
// ADD registers the attachment's names on its network in the record store, makes sure the
// sidecar of the plugin's network namespace runs (starting `moor-dns serve` when its
// control socket does not answer: its pid file lock guarantees one instance even when ADDs
// race; a sidecar answering for another namespace is never used), tells it to reload, and returns
// only once the sidecar answers for the new name on the gateway, so the container's first
// lookup works. The result is prevResult with dns.nameservers set to the network's
// gateways and dns.search to its domain.
//
// Names: the container's name (args.cni.name, else CNI_ARGS K8S_POD_NAME, which podman
// fills with the container name), its aliases (runtimeConfig.aliases, list or podman's map
// form), for Kubernetes pods also <pod>.<namespace>, and the 12-character short container
// ID. A requested name that is not a valid DNS name is code 7 and nothing is registered;
// the short ID, which nobody asked for, is left out when it is not a valid name.
//
// DEL removes exactly this attachment's record and never the network (a concurrent ADD may
// be between writing the network and its record); GC drops the records of attachments not
// in the valid list; the sidecar stops by itself when no record is left for a while.
var plugin = plugins.Plugin{
	Name:   "moor-dns",
	Add:    delegating(cmdAdd),
	Del:    delegating(cmdDel),
	Check:  delegating(cmdCheck),
	GC:     delegating(cmdGC),
	Status: delegating(cmdStatus),
}

// shortIDLen is the length of Docker's and Podman's short container ID.
const shortIDLen = 12

func cmdAdd(call *plugins.Call) error {
	c, err := loadConf(call)
	if err != nil {
		return err
	}
	if c.PrevResult == nil {
		return plugins.InvalidField("prevResult", "", "moor-dns is a chained plugin: place it after moor-bridge, moor-macvlan or moor-overlay in the conflist")
	}
	ips, gateways, subnets := attachmentAddrs(c.PrevResult)
	if len(ips) == 0 {
		return plugins.InvalidField("prevResult.ips", "[]", "the attachment has no address to register")
	}
	gateways, err = serverAddrs(gateways, subnets)
	if err != nil {
		return err
	}
	names, err := namesFor(call, c)
	if err != nil {
		return err
	}
	st, sc, err := openStore(call, c)
	if err != nil {
		return err
	}
	defer st.Close()
	ctx := context.Background()
	var unheld func(string) bool
	if sc.Type == storeLocal {
		unheld = sidecarUnheld(c, gateways)
	}
	if err := aliasesClaimNoOwnName(ctx, st, call, c, unheld); err != nil {
		return err
	}
	undo := plugins.NewUndo(call.Log)
	defer undo.Rollback()

	if sc.Type == storeLocal {
		if err := claimStore(call, c, st); err != nil {
			return err
		}
	}
	// After the claim, which may empty a store left by a deleted namespace.
	if err := checkNameBounds(ctx, st, c.Name, call.ContainerID, call.IfName, names); err != nil {
		return err
	}
	network := records.Network{Name: c.Name, Domain: c.Domain, Gateways: gateways, Subnets: subnets, Internal: c.Internal, Upstreams: c.Upstreams}
	if err := st.PutNetwork(ctx, network); err != nil {
		return err
	}
	rec := records.Record{Network: c.Name, ContainerID: call.ContainerID, IfName: call.IfName, Names: names, IPs: ips}
	if err := st.Put(ctx, rec); err != nil {
		return err
	}
	undo.Push("delete record", func() error { return st.Delete(ctx, c.Name, call.ContainerID, call.IfName) })
	if err := call.Fault("dns/after-record"); err != nil {
		return err
	}
	if err := ensureSidecar(call, c, sc, rec.Key()); err != nil {
		return err
	}
	if err := call.Fault("dns/after-sidecar"); err != nil {
		return err
	}
	for _, gw := range gateways {
		addr := net.JoinHostPort(gw.String(), strconv.Itoa(c.Port))
		if err := server.WaitAnswer(addr, names[0], c.wait); err != nil {
			return err
		}
	}
	res := *c.PrevResult
	res.DNS.Nameservers = nil
	for _, gw := range gateways {
		res.DNS.Nameservers = append(res.DNS.Nameservers, gw.String())
	}
	res.DNS.Search = []string{c.Domain}
	undo.Commit()
	return call.PrintResult(&res)
}

// attachmentAddrs returns the container's addresses from a driver's result (those on an
// interface inside a sandbox, or all when the result names no interface), their gateways
// and subnets.
func attachmentAddrs(res *current.Result) (ips, gateways []net.IP, subnets []*net.IPNet) {
	inSandbox := func(ipc *current.IPConfig) bool {
		if ipc.Interface == nil || *ipc.Interface < 0 || *ipc.Interface >= len(res.Interfaces) {
			return true
		}
		return res.Interfaces[*ipc.Interface].Sandbox != ""
	}
	seenGW := map[string]bool{}
	for _, ipc := range res.IPs {
		if !inSandbox(ipc) {
			continue
		}
		ips = append(ips, ipc.Address.IP)
		subnets = append(subnets, &net.IPNet{IP: ipc.Address.IP.Mask(ipc.Address.Mask), Mask: ipc.Address.Mask})
		if ipc.Gateway != nil && !seenGW[ipc.Gateway.String()] {
			seenGW[ipc.Gateway.String()] = true
			gateways = append(gateways, ipc.Gateway)
		}
	}
	return ips, gateways, subnets
}

// namesFor lists the attachment's names, primary first.
func namesFor(call *plugins.Call, c *conf) ([]string, error) {
	var names []string
	add := func(field, name string) error {
		if err := records.ValidName(name); err != nil {
			return plugins.InvalidField(field, name, "not a valid DNS name: letters, digits, '-' and '_' in dot-separated labels of at most 63 characters")
		}
		names = append(names, strings.ToLower(name))
		return nil
	}
	nameField := "CNI_ARGS K8S_POD_NAME"
	if c.Args != nil && c.Args.CNI.Name != "" {
		nameField = "args.cni.name"
	}
	if name := c.ContainerName(); name != "" {
		if err := add(nameField, name); err != nil {
			return nil, err
		}
		if ns := c.CNIArgs.Get("K8S_POD_NAMESPACE"); ns != "" {
			if err := add("CNI_ARGS K8S_POD_NAMESPACE", name+"."+ns); err != nil {
				return nil, err
			}
		}
	}
	aliases := c.RuntimeConfig.Aliases.For(c.Name)
	if err := checkAliasCount(aliases); err != nil {
		return nil, err
	}
	for i, alias := range aliases {
		if err := add(fmt.Sprintf("runtimeConfig.aliases[%d]", i), alias); err != nil {
			return nil, err
		}
	}
	short := call.ContainerID
	if len(short) > shortIDLen {
		short = short[:shortIDLen]
	}
	if records.ValidName(short) == nil {
		names = append(names, strings.ToLower(short))
	}
	if len(names) == 0 {
		return nil, plugins.InvalidField("CNI_CONTAINERID", call.ContainerID, "no valid DNS name for the container: give it a name or an alias")
	}
	return names, nil
}

// aliasesClaimNoOwnName refuses an alias that is another attachment's own name on the
// network: its primary name (the first of its names, which its PTR answers give) or its
// short container ID. Aliases are shared (round robin) by design, names are not: a
// container must not draw half of another's traffic by taking its name as an alias. A
// name taken first as an alias stays shared with a container that later has it as its
// name (the first comer cannot know); a container without a name has its first alias as
// primary name, which later containers then cannot share: give containers names to share
// aliases.
//
// Checking reads every record of the network, unless unheld (nil: none) reports that no
// record holds any of the aliases as a name at all, which the sidecar can tell from its
// index (sidecarUnheld; a short ID is a name of its record whenever an alias could equal
// it, being then a valid name): an ADD with aliases nobody uses then costs the same on a
// network of a thousand containers as on an empty one.
func aliasesClaimNoOwnName(ctx context.Context, st records.Store, call *plugins.Call, c *conf, unheld func(alias string) bool) error {
	aliases := c.RuntimeConfig.Aliases.For(c.Name)
	if len(aliases) == 0 {
		return nil
	}
	if unheld != nil && !slices.ContainsFunc(aliases, func(a string) bool { return !unheld(a) }) {
		return nil
	}
	recs, err := st.List(ctx, c.Name)
	if err != nil && len(recs) == 0 {
		return err
	}
	owner := map[string]string{}
	for _, r := range recs {
		if r.ContainerID == call.ContainerID && r.IfName == call.IfName {
			continue
		}
		short := r.ContainerID[:min(len(r.ContainerID), shortIDLen)]
		owner[strings.ToLower(short)] = r.ContainerID
		if len(r.Names) > 0 {
			owner[r.Names[0]] = r.ContainerID
		}
	}
	for i, a := range aliases {
		if id, ok := owner[strings.ToLower(a)]; ok && id != call.ContainerID {
			return plugins.InvalidField(fmt.Sprintf("runtimeConfig.aliases[%d]", i), a,
				fmt.Sprintf("is the name or short ID of container %s on network %s", id, c.Name))
		}
	}
	return nil
}

// unheldTimeout bounds one sidecarUnheld query; past it the records are read.
const unheldTimeout = 200 * time.Millisecond

// sidecarUnheld returns a function that asks the namespace's running sidecar whether no
// record holds a name on the network (server.NameUnheld, on the first gateway), or nil when
// no sidecar of this namespace answers. Its index follows every record a plugin wrote and
// told it of, which are the records of a local store, so "unheld" is what reading the
// store would say but for an ADD running meanwhile, whose record the store shows between
// its write and its reload (concurrent ADDs can race for a name either way). Records of
// an etcd store come from other hosts too, through a watch that may lag: callers use it
// for local stores only.
func sidecarUnheld(c *conf, gateways []net.IP) func(string) bool {
	if len(gateways) == 0 {
		return nil
	}
	checked, running := false, false
	addr := net.JoinHostPort(gateways[0].String(), strconv.Itoa(c.Port))
	return func(name string) bool {
		if !checked {
			_, err := server.Sidecar(c.ControlSocket, c.netns)
			checked, running = true, err == nil
		}
		return running && server.NameUnheld(addr, name, c.Domain, unheldTimeout)
	}
}

func cmdDel(call *plugins.Call) error {
	return withStore(call, func(c *conf, st records.Store) error {
		if err := st.Delete(context.Background(), c.Name, call.ContainerID, call.IfName); err != nil {
			return err
		}
		if err := call.Fault("dns/del-after-record"); err != nil {
			return err // the sidecar still answers the name until the next reload
		}
		return reloadIfRunning(c, &records.RecordKey{Network: c.Name, ContainerID: call.ContainerID, IfName: call.IfName})
	})
}

// withStore loads the call's config, opens its record store and runs fn with both.
func withStore(call *plugins.Call, fn func(c *conf, st records.Store) error) error {
	c, err := loadConf(call)
	if err != nil {
		return err
	}
	st, _, err := openStore(call, c)
	if err != nil {
		return err
	}
	defer st.Close()
	return fn(c, st)
}

// reloadIfRunning tells the namespace's running sidecar that the record key (nil: any
// records) changed; no sidecar, or one of another namespace, nothing to tell.
func reloadIfRunning(c *conf, key *records.RecordKey) error {
	if key != nil {
		_, err := server.ReloadSidecar(c.ControlSocket, c.netns, *key)
		var foreign *server.ForeignError
		if errors.Is(err, server.ErrNotRunning) || errors.As(err, &foreign) {
			return nil
		}
		return err
	}
	if _, err := server.Sidecar(c.ControlSocket, c.netns); err != nil {
		return nil
	}
	return server.Reload(c.ControlSocket)
}

func cmdCheck(call *plugins.Call) error {
	return withStore(call, func(c *conf, st records.Store) error {
		recs, err := st.List(context.Background(), c.Name)
		if err != nil {
			return err
		}
		var rec *records.Record
		for i := range recs {
			if recs[i].ContainerID == call.ContainerID && recs[i].IfName == call.IfName {
				rec = &recs[i]
			}
		}
		if rec == nil {
			return codes.New(codes.CheckFailed, fmt.Sprintf("CHECK: no DNS record for container %s/%s on network %s", call.ContainerID, call.IfName, c.Name))
		}
		if c.PrevResult != nil {
			_, gateways, subnets := attachmentAddrs(c.PrevResult)
			gateways, _ = serverAddrs(gateways, subnets)
			for _, gw := range gateways {
				addr := net.JoinHostPort(gw.String(), strconv.Itoa(c.Port))
				if err := server.WaitAnswer(addr, rec.Names[0], c.wait); err != nil {
					return codes.Wrap(codes.CheckFailed, fmt.Sprintf("CHECK: the DNS server on %s does not answer for %s", addr, rec.Names[0]), err)
				}
			}
		}
		return nil
	})
}

func cmdGC(call *plugins.Call) error {
	return withStore(call, func(c *conf, st records.Store) error {
		ctx := context.Background()
		recs, err := st.List(ctx, c.Name)
		if err != nil && len(recs) == 0 {
			return err
		}
		valid := map[[2]string]bool{}
		for _, v := range c.ValidAttachments {
			valid[[2]string{v.ContainerID, v.IfName}] = true
		}
		var errs []error
		for _, r := range recs {
			if valid[[2]string{r.ContainerID, r.IfName}] {
				continue
			}
			if err := st.Delete(ctx, c.Name, r.ContainerID, r.IfName); err != nil {
				errs = append(errs, err)
			}
		}
		errs = append(errs, reloadIfRunning(c, nil))
		return errors.Join(errs...)
	})
}

// cmdStatus: ready when the sidecar answers, or when it could be started (its binary is
// there and the store directory is writable).
func cmdStatus(call *plugins.Call) error {
	c, err := loadConf(call)
	if err != nil {
		return err
	}
	if _, err := server.Sidecar(c.ControlSocket, c.netns); err == nil {
		return nil
	}
	if _, err := sidecarBinary(); err != nil {
		return codes.Wrap(codes.PluginNotAvailable, "the DNS sidecar cannot be started", err)
	}
	st, _, err := openStore(call, c)
	if err != nil {
		return codes.Wrap(codes.PluginNotAvailable, "DNS record store", err)
	}
	return st.Close()
}
