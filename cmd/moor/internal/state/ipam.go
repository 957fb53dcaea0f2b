// Package state reads and removes what a moor network holds outside its config file:
// the IPAM store's attachments, the bridge, the firewall rules and the DNS records.
//
// Every kernel-facing step runs in the CLI's host namespace (package hostns); stores are
// files (or etcd) and are read where they are.
//
// Decisions, and why:
//   - a bridge is removed only when it is a bridge, no other moor network in the config
//     directory names it, and every port it still has carries moor's altname (a port
//     without one is someone else's: the bridge is left and the reason reported);
//   - the firewall rules are removed with the backend the config names, else with every
//     backend that works here (a host that switched backends may hold rules in both);
//   - DNS records are removed from the local record store; a running sidecar is then told
//     to reload, so it stops serving them at once;
//   - IPAM state: whatever the network's store holds, through store.Store.Destroy (the
//     local store's file and its lock file, or every key under the network's etcd
//     prefix): this package knows no store's layout.
//
// What it does not do: it removes nothing of an attachment that is still wanted (the CLI
// runs the runtime's GC first when forced) and it does not touch the config file.
package state

import (
	"context"
	"errors"
	"fmt"
	"os"

	_ "github.com/moornet/moor/ipam/allocator/etcdstore" // inspect and rm read etcd-backed networks

	"github.com/moornet/moor/conflist"
	"github.com/moornet/moor/ipam/allocator"
	"github.com/moornet/moor/ipam/config"
	"github.com/moornet/moor/ipam/store"
)

// ErrNoStore: the network's addresses are not in a moor-ipam store (another IPAM type, or
// an ipam section that does not parse), so its attachments cannot be read there.
var ErrNoStore = errors.New("no moor-ipam store")

// Attachments returns the attachments recorded in the network's IPAM store, sorted by
// container ID and interface. A local store that was never written holds none.
func Attachments(ctx context.Context, n *conflist.Network) ([]store.Attachment, error) {
	if !n.HasMoorIPAM() {
		return nil, noStore(n)
	}
	if n.IPAM.Store.Type != config.StoreEtcd {
		if _, err := os.Stat(allocator.StorePath(n.IPAM)); errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
	}
	st, err := allocator.OpenStore(n.IPAM)
	if err != nil {
		return nil, fmt.Errorf("network %s: opening its IPAM store: %w", n.Name, err)
	}
	defer st.Close()
	atts, err := st.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("network %s: reading its IPAM store: %w", n.Name, err)
	}
	return atts, nil
}

func noStore(n *conflist.Network) error {
	switch {
	case n.IPAMType == "":
		return fmt.Errorf("network %s has no ipam section: %w", n.Name, ErrNoStore)
	case n.IPAMType != conflist.IPAMType:
		return fmt.Errorf("network %s uses ipam type %q: %w", n.Name, n.IPAMType, ErrNoStore)
	default:
		return fmt.Errorf("network %s: ipam section: %v: %w", n.Name, n.IPAMErr, ErrNoStore)
	}
}

// StoreLocation names where the network's IPAM state lives, for messages.
func StoreLocation(n *conflist.Network) string {
	if !n.HasMoorIPAM() {
		return ""
	}
	if n.IPAM.Store.Type == config.StoreEtcd {
		return "etcd prefix " + allocator.StorePrefix(n.IPAM)
	}
	return allocator.StorePath(n.IPAM)
}

// RemoveIPAM deletes the network's IPAM state (store.Store.Destroy: the local store file
// and its lock, or every key of its etcd prefix). Nothing there is not an error.
func RemoveIPAM(ctx context.Context, n *conflist.Network) error {
	if !n.HasMoorIPAM() {
		return nil
	}
	st, err := allocator.OpenStore(n.IPAM)
	if err != nil {
		return fmt.Errorf("opening the IPAM store of %s: %w", n.Name, err)
	}
	defer st.Close()
	if err := st.Destroy(ctx, store.DestroyOptions{}); err != nil {
		return fmt.Errorf("removing the IPAM state of %s: %w", n.Name, err)
	}
	return nil
}
