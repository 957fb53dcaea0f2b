package main

import (
	"context"
	"net"
	"strings"
	"testing"

	"github.com/moornet/moor/dns/records"
	"github.com/moornet/moor/plugins"
)

// countingStore counts the calls that read every record of a network.
type countingStore struct {
	records.Store
	lists int
}

func (s *countingStore) List(ctx context.Context, network string) ([]records.Record, error) {
	s.lists++
	return s.Store.List(ctx, network)
}

// The alias claim check reads the network's records unless the sidecar says that no record
// holds any of the aliases; an alias that may be held is checked against the records, so
// another attachment's name is refused whatever the sidecar's answer for the others.
func TestAliasesClaimSkipsUnheldAliases(t *testing.T) {
	ctx := context.Background()
	local := storeWithNetwork(t)
	if err := local.Put(ctx, records.Record{Network: "n", ContainerID: "victim0123456789", IfName: "eth0", Names: []string{"web", "victim012345"}, IPs: []net.IP{net.ParseIP("10.89.0.9")}}); err != nil {
		t.Fatal(err)
	}
	call := &plugins.Call{ContainerID: "newcomer", IfName: "eth0"}
	unheldExcept := func(held ...string) func(string) bool {
		return func(a string) bool {
			for _, h := range held {
				if strings.EqualFold(a, h) {
					return false
				}
			}
			return true
		}
	}
	for _, tc := range []struct {
		name    string
		aliases []string
		unheld  func(string) bool
		lists   int
		refused string
	}{
		{"no sidecar", []string{"api"}, nil, 1, ""},
		{"no sidecar, another's name", []string{"api", "web"}, nil, 1, `runtimeConfig.aliases[1] "web"`},
		{"every alias unheld", []string{"api", "db"}, unheldExcept(), 0, ""},
		{"one alias held by another's name", []string{"api", "web"}, unheldExcept("web"), 1, `runtimeConfig.aliases[1] "web"`},
		{"one alias held by another's short ID", []string{"Victim012345"}, unheldExcept("victim012345"), 1, `runtimeConfig.aliases[0] "Victim012345"`},
		{"one alias held, as an alias", []string{"api", "shared"}, unheldExcept("shared"), 1, ""},
		{"no aliases", nil, unheldExcept(), 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := &countingStore{Store: local}
			c := &conf{}
			c.Name = "n"
			c.RuntimeConfig.Aliases = plugins.Aliases{List: tc.aliases}
			err := aliasesClaimNoOwnName(ctx, st, call, c, tc.unheld)
			if st.lists != tc.lists {
				t.Errorf("the records were listed %d times, want %d", st.lists, tc.lists)
			}
			switch {
			case tc.refused == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.refused != "" && (err == nil || !strings.Contains(err.Error(), tc.refused)):
				t.Errorf("got %v, want a refusal naming %s", err, tc.refused)
			}
		})
	}
}
