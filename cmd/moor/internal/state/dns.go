package state

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/moornet/moor/conflist"
	"github.com/moornet/moor/dns/records"
	"github.com/moornet/moor/dns/server"
	"github.com/moornet/moor/plugins/netnsid"
)

// DNS locates the DNS sidecar's record store and control socket: the host namespace's
// (the CLI's --dns-dir and --dns-socket, else as moor-dns finds them); a network's moor-dns
// entry may name its own (storeDir, controlSocket), see For. A sidecar answering on the
// socket for another network namespace than Netns is treated as absent.
type DNS struct {
	Dir    string     // records.DefaultRoot when empty
	Socket string     // server.DefaultControlSocket when empty
	Netns  netnsid.ID // the host namespace; zero: any sidecar will do
}

// For returns where the network's records and sidecar are: the paths its moor-dns entry
// names, else d's.
func (d DNS) For(n *conflist.Network) DNS {
	if n.DNS == nil {
		return d
	}
	if n.DNS.StoreDir != "" {
		d.Dir = n.DNS.StoreDir
	}
	if n.DNS.ControlSocket != "" {
		d.Socket = n.DNS.ControlSocket
	}
	return d
}

func (d DNS) dir() string {
	if d.Dir == "" {
		return records.DefaultRoot
	}
	return d.Dir
}

// ControlSocket is the sidecar's control socket.
func (d DNS) ControlSocket() string {
	if d.Socket == "" {
		return server.DefaultControlSocket
	}
	return d.Socket
}

// store opens the record store without creating it: nil when it does not exist.
func (d DNS) store() (*records.Local, error) {
	if _, err := os.Stat(d.dir()); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return records.NewLocal(d.dir())
}

// Records counts the records of a network; a network whose name cannot be a record store
// directory has none.
func (d DNS) Records(ctx context.Context, network string) (int, error) {
	if records.ValidNetworkName(network) != nil {
		return 0, nil
	}
	st, err := d.store()
	if err != nil || st == nil {
		return 0, err
	}
	defer st.Close()
	recs, err := st.List(ctx, network)
	if err != nil {
		return len(recs), fmt.Errorf("reading DNS records of %s: %w", network, err)
	}
	return len(recs), nil
}

// Answering reports whether the host namespace's sidecar answers on its control socket.
func (d DNS) Answering() bool {
	if d.Netns.IsZero() {
		return server.Healthy(d.ControlSocket())
	}
	_, err := server.Sidecar(d.ControlSocket(), d.Netns)
	return err == nil
}

// Remove deletes the network's records and, when the sidecar runs, has it reload.
func (d DNS) Remove(ctx context.Context, network string) error {
	if records.ValidNetworkName(network) != nil {
		return nil
	}
	st, err := d.store()
	if err != nil || st == nil {
		return err
	}
	defer st.Close()
	if err := st.DeleteNetwork(ctx, network); err != nil {
		return fmt.Errorf("removing DNS records of %s: %w", network, err)
	}
	if d.Answering() {
		if err := server.Reload(d.ControlSocket()); err != nil {
			return fmt.Errorf("DNS records of %s removed, but the sidecar did not reload: %w", network, err)
		}
	}
	return nil
}
