package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/moornet/moor/dns/records"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/flock"
	"github.com/moornet/moor/plugins/netnsid"
	"github.com/moornet/moor/plugins/statefs"
)

// A local record store belongs to the network namespace whose identity keys its path
// (server.PathsFor). The kernel gives a dead namespace's inode number to a later one, so a
// store may outlive its namespace (a sidecar that was killed, a namespace deleted without
// DELs) and be found by a new namespace with the same identity. Its records name
// containers of the dead namespace: the new one must not serve them. The store's marker
// file (<storeDir>.netns, "<dev>-<ino> <cookie>") records the cookie of the namespace that
// writes it, which the kernel never reuses; ADD compares it with its own and empties the
// store when the identity matches and the cookie does not. A marker of another identity
// (paths shared on purpose between namespaces) is left alone, and so is the store.

// markerSuffix names the marker beside the store directory.
const markerSuffix = ".netns"

// claimStore makes sure the local store holds no records of a dead namespace that had
// this namespace's identity (see above). Without namespace cookies (kernels before 5.14)
// it does nothing.
func claimStore(call *plugins.Call, c *conf, st records.Store) error {
	cookie, err := netnsid.Cookie()
	if errors.Is(err, netnsid.ErrNoCookie) {
		return nil
	}
	if err != nil {
		return codes.Wrap(codes.IOFailure, "reading the network namespace's cookie", err)
	}
	wiped, err := claim(context.Background(), c.StoreDir+markerSuffix, c.netns, cookie, st, c.wait)
	if wiped {
		call.Log.Info("removed the DNS records of a deleted network namespace with this one's identity", "store", c.StoreDir, "netns", c.netns)
	}
	return err
}

// claim holds the marker's lock while it reads it, empties st when the marker names id
// with another cookie, and writes id and cookie when the marker is new or stale. It
// reports whether it emptied the store.
func claim(ctx context.Context, marker string, id netnsid.ID, cookie uint64, st records.Store, timeout time.Duration) (bool, error) {
	release, err := flock.Lock(ctx, marker, flock.Options{Timeout: timeout})
	if err != nil {
		if errors.Is(err, flock.ErrTimeout) {
			return false, codes.Wrap(codes.TryAgainLater, "DNS record store marker "+marker, err)
		}
		if unsafe := new(statefs.UnsafeError); errors.As(err, &unsafe) {
			return false, err // code 7 naming the path
		}
		return false, codes.Wrap(codes.IOFailure, "DNS record store marker "+marker, err)
	}
	defer release()
	wiped := false
	data, err := os.ReadFile(marker)
	if err != nil {
		return false, codes.Wrap(codes.IOFailure, "reading "+marker, err)
	}
	switch owner, got, ok := parseMarker(data); {
	case ok && owner != id.String():
		return false, nil // another namespace's store, shared on purpose
	case ok && got == cookie:
		return false, nil
	case ok:
		// A proven other life of this identity: its records go. (A marker that cannot
		// be read is only rewritten.)
		if err := emptyStore(ctx, st); err != nil {
			return false, err
		}
		wiped = true
	}
	if err := os.WriteFile(marker, fmt.Appendf(nil, "%s %d\n", id, cookie), flock.FileMode); err != nil {
		return wiped, codes.Wrap(codes.IOFailure, "writing "+marker, err)
	}
	return wiped, nil
}

// parseMarker reads "<dev>-<ino> <cookie>".
func parseMarker(data []byte) (owner string, cookie uint64, ok bool) {
	fields := strings.Fields(string(data))
	if len(fields) != 2 {
		return "", 0, false
	}
	if _, err := netnsid.Parse(fields[0]); err != nil {
		return "", 0, false
	}
	cookie, err := strconv.ParseUint(fields[1], 10, 64)
	return fields[0], cookie, err == nil
}

// emptyStore deletes every network of st with its records.
func emptyStore(ctx context.Context, st records.Store) error {
	nets, err := st.Networks(ctx)
	if err != nil && len(nets) == 0 {
		return err
	}
	for _, n := range nets {
		if err := st.DeleteNetwork(ctx, n.Name); err != nil {
			return err
		}
	}
	return nil
}
