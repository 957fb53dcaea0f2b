package main

import (
	"context"
	"fmt"

	"github.com/moornet/moor/dns/records"
	"github.com/moornet/moor/plugins"
)

// aliasesField is the field a refusal for too many names points at: the aliases are the
// only part of an attachment's names that can be long.
const aliasesField = "runtimeConfig.aliases"

// checkAliasCount refuses an alias list that alone passes the per-attachment bound, before
// any alias is validated, so that a huge list costs nothing.
func checkAliasCount(aliases []string) error {
	if len(aliases) > records.MaxNamesPerRecord {
		return plugins.InvalidField(aliasesField, fmt.Sprintf("%d aliases", len(aliases)),
			fmt.Sprintf("at most %d names per attachment", records.MaxNamesPerRecord))
	}
	return nil
}

// nameCounter is a store that counts a network's names without reading every record
// (records.Local, through its names counter).
type nameCounter interface {
	NamesHeld(ctx context.Context, network string) (int, error)
	Get(ctx context.Context, network, containerID, ifName string) (records.Record, error)
}

// namesHeld counts the names of the network's readable records other than the
// attachment's own. With a nameCounter it reads the counter and the attachment's own
// record, so that an ADD costs the same on a network of a thousand containers as on an
// empty one; other stores are listed.
func namesHeld(ctx context.Context, st records.Store, network, containerID, ifName string) (int, error) {
	if nc, ok := st.(nameCounter); ok {
		held, err := nc.NamesHeld(ctx, network)
		if err != nil {
			return 0, err
		}
		if own, err := nc.Get(ctx, network, containerID, ifName); err == nil {
			held -= len(own.Names)
		}
		return max(held, 0), nil
	}
	recs, err := st.List(ctx, network)
	if err != nil && len(recs) == 0 {
		return 0, err
	}
	held := 0
	for _, r := range recs {
		if r.ContainerID == containerID && r.IfName == ifName {
			continue
		}
		held += len(r.Names)
	}
	return held, nil
}

// checkNameBounds refuses an attachment whose names pass the per-attachment bound, or
// would bring its network past the per-network bound (counting every other attachment's
// names; a record of this attachment being replaced does not count). Concurrent ADDs on
// one network each see the others' records only once written, so the network bound can
// be passed by at most the names of the ADDs in flight at once.
func checkNameBounds(ctx context.Context, st records.Store, network, containerID, ifName string, names []string) error {
	if len(names) > records.MaxNamesPerRecord {
		return plugins.InvalidField(aliasesField, fmt.Sprintf("%d names", len(names)),
			fmt.Sprintf("at most %d names per attachment (name, pod name, aliases and short ID together)", records.MaxNamesPerRecord))
	}
	held, err := namesHeld(ctx, st, network, containerID, ifName)
	if err != nil {
		return err
	}
	if held+len(names) > records.MaxNamesPerNetwork {
		return plugins.InvalidField(aliasesField, fmt.Sprintf("%d names", len(names)),
			fmt.Sprintf("network %s holds %d names; at most %d names per network", network, held, records.MaxNamesPerNetwork))
	}
	return nil
}
