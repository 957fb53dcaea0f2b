package integration

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	"github.com/moornet/moor/ipam/store/local"
	"github.com/moornet/moor/lab"
	"github.com/moornet/moor/plugins/codes"
)

const lab2 = `
underlay: 172.31.8.0/24
networks:
  - {name: ov, subnet: 10.241.0.0/16, vni: 42}
hosts:
  - {name: h1}
  - {name: h2, containers: [c2]}
`

// TestOverlayAddWithEtcdDown: on a fresh host (no agent, no overlay links yet), an ADD
// while etcd is down fails with code 11 and leaves nothing: no link on the host, no
// interface in the container, no reservation. With etcd back, the same ADD without an
// agent succeeds and its one-shot sync gives the host the other host's entries.
func TestOverlayAddWithEtcdDown(t *testing.T) {
	l := upLab(t, lab2)
	ctx := context.Background()
	h1, _ := l.Host("h1")
	h1.Agent.Kill()
	for _, link := range []string{ovVXLAN, ovBridge} {
		if err := execIn(h1.Netns, "ip", "link", "del", link); err != nil {
			t.Fatal(err)
		}
	}
	fresh := links(t, h1.Netns)
	l.StopEtcd()
	_, err := l.AddContainer(ctx, "h1", lab.ContainerSpec{Name: "c1"})
	if code := cniCodeOf(err); code != codes.TryAgainLater {
		t.Fatalf("ADD with etcd down: %v (code %d), want code %d", err, code, codes.TryAgainLater)
	}
	if got := links(t, h1.Netns); !slices.Equal(got, fresh) {
		t.Fatalf("host links after the failed ADD: %v, before: %v", got, fresh)
	}
	c1, _ := l.Container("c1")
	if got := links(t, c1.Netns); !slices.Equal(got, []string{"lo"}) {
		t.Fatalf("container links after the failed ADD: %v", got)
	}
	if held := reservations(t, filepath.Join(h1.Dir, "ipam", ovNetwork+".db")); len(held) != 0 {
		t.Fatalf("reservations after the failed ADD: %v", held)
	}

	if err := l.StartEtcd(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l.RemoveContainer(ctx, "c1"); err != nil { // the runtime's DEL after the failed ADD
		t.Fatal(err)
	}
	if _, err := l.AddContainer(ctx, "h1", lab.ContainerSpec{Name: "c1"}); err != nil {
		t.Fatalf("ADD with etcd back and no agent: %v", err)
	}
	k, err := readKernel(h1.Netns)
	if err != nil {
		t.Fatal(err)
	}
	if want := expected(leases(t, l), h1.HostID); k.String() != want.String() || len(k.FDB) != 1 {
		t.Fatalf("after the one-shot sync h1 holds\n%s\nwant\n%s", k, want)
	}
	waitConverged(t, l, "h1", "h2") // h2's agent applied h1's join
	mustReach(t, l, "c1", "c2", false)
	mustReach(t, l, "c2", "c1", false)
}

// reservations lists the attachment keys held in a local IPAM store file.
func reservations(t *testing.T, path string) []string {
	t.Helper()
	st, err := local.Open(local.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	atts, err := st.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range atts {
		out = append(out, a.Key.String())
	}
	return out
}

func execIn(netns string, args ...string) error {
	if out, err := execOut("ip", append([]string{"netns", "exec", netns}, args...)...); err != nil {
		return fmt.Errorf("%v in %s: %w: %s", args, netns, err, out)
	}
	return nil
}
