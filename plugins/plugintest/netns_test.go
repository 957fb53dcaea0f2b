package plugintest_test

import (
	"testing"

	"github.com/moornet/moor/plugins/netnsid"
	"github.com/moornet/moor/plugins/plugintest"
	"github.com/moornet/moor/plugins/statefs"
)

// The state directory plugintest.Netns removes is the one the plugins write: the name
// netnsid gives the namespace, under the run dir.
func TestNetnsStateDirIsNetnsids(t *testing.T) {
	t.Setenv(statefs.EnvRunDir, t.TempDir())
	n := plugintest.Netns(t, "moorptst")
	got, err := plugintest.NetnsStateDir(n.Path())
	if err != nil {
		t.Fatal(err)
	}
	id, err := netnsid.Of(n.Path())
	if err != nil {
		t.Fatal(err)
	}
	if want := netnsid.StateDir(statefs.RunDir(nil), id, false); got != want {
		t.Errorf("NetnsStateDir = %s, netnsid.StateDir = %s", got, want)
	}
}
