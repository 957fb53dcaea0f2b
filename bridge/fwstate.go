package main

import (
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/firewall"
	"github.com/moornet/moor/plugins/firewall/keeper"
)

// envKeeper set to "off" makes ADD start no firewall keeper (test harnesses that plant
// drift on purpose, hosts that run `moor-dns keep-firewall` under a service manager).
const envKeeper = "MOOR_FIREWALL_KEEPER"

// keeperBinary is the binary whose keep-firewall mode is the keeper, found in CNI_PATH.
const keeperBinary = "moor-dns"

// fwState is the firewall's record of this host's networks and published ports, which
// the host's firewall keeper (package keeper) rebuilds moor's rules from after a
// firewall reload.
func fwState(call *plugins.Call) firewall.State {
	return firewall.State{Dir: firewall.DefaultStateDir(call.Getenv)}
}

// recordFirewall records the backend, the network and the attachment's published ports,
// with their undo (a failed ADD leaves no record behind), and makes sure a keeper runs.
func recordFirewall(call *plugins.Call, backend string, n firewall.Network, a firewall.Attachment, newNetwork bool, undo *plugins.Undo) error {
	st := fwState(call)
	if err := st.SetBackend(backend); err != nil {
		return err
	}
	if err := st.SaveAttachment(n, a); err != nil {
		return err
	}
	if newNetwork {
		undo.Push("forget network firewall state", func() error { return st.RemoveNetwork(n.Name) })
	}
	if len(a.Ports) > 0 {
		undo.Push("forget published ports", func() error { return st.RemoveAttachment(a.Network, a.ContainerID, a.IfName) })
	}
	startKeeper(call, st)
	return nil
}

// startKeeper starts `moor-dns keep-firewall` unless one runs. A keeper that cannot be
// started is logged, not an ADD failure: the rules are in place, only their repair after
// a firewall reload is missing (and `moor doctor` says no keeper runs).
func startKeeper(call *plugins.Call, st firewall.State) {
	if call.Getenv(envKeeper) == "off" {
		return
	}
	exe := ""
	for _, dir := range filepath.SplitList(call.Path) {
		if p, err := exec.LookPath(filepath.Join(dir, keeperBinary)); err == nil && strings.TrimSpace(dir) != "" {
			exe = p
			break
		}
	}
	if exe == "" {
		call.Log.Warn("no firewall keeper: moor-dns not in CNI_PATH", "path", call.Path)
		return
	}
	if err := keeper.Start(exe, st.Dir); err != nil {
		call.Log.Warn("no firewall keeper", "err", err)
	}
}
