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
	recs, err := st.List(ctx, network)
	if err != nil && len(recs) == 0 {
		return err
	}
	held := 0
	for _, r := range recs {
		if r.ContainerID == containerID && r.IfName == ifName {
			continue
		}
		held += len(r.Names)
	}
	if held+len(names) > records.MaxNamesPerNetwork {
		return plugins.InvalidField(aliasesField, fmt.Sprintf("%d names", len(names)),
			fmt.Sprintf("network %s holds %d names; at most %d names per network", network, held, records.MaxNamesPerNetwork))
	}
	return nil
}
