package integration

import (
	"strings"
	"testing"
)

// TestNetavarkRecreatedNetwork: a container's teardown never reaches the plugin (as when
// netavark cannot enter a netns another mount namespace mounted), podman removes the
// network anyway and creates one of the same name, with another ID. The new network must
// not inherit the old one's state: podman hands the next container the same address and
// moor must accept it (it refused it with code 101, "already held", when its state was
// kept by name), the old container's name, rules and cached result must be gone, and a
// teardown of the new container leaves nothing.
func TestNetavarkRecreatedNetwork(t *testing.T) {
	for _, stage := range []string{"create", "setup"} {
		t.Run("cleared on "+stage, func(t *testing.T) { nvRecreated(t, stage) })
	}
}

// nvRecreated runs the scenario; clearedOn says which command first sees the new ID:
// "create" (podman network create), or "setup" (a network created before this version
// recorded IDs, or by a caller that skips create).
func nvRecreated(t *testing.T, clearedOn string) {
	w := newNVWorld(t)
	linksBefore := w.hostLinks()
	first, err := w.nv.create(w.network("nvagain", "mnv5", "10.236.0.0/24", true))
	if err != nil {
		t.Fatal(err)
	}
	lost, err := plugintestNamed("moorit-nvlost")
	if err != nil {
		t.Fatal(err)
	}
	old := nvRequest{id: containerID(t), name: "api", ips: []string{"10.236.0.2"},
		ports: []map[string]any{{"container_port": 80, "host_ip": "", "host_port": 18495, "protocol": "tcp", "range": 1}}}
	if _, err := w.nv.setup(lost.Path(), old.body(first)); err != nil {
		deleteNetns(lost)
		t.Fatalf("setup of the first network's container: %v", err)
	}
	// The teardown never comes; the container and its netns go.
	deleteNetns(lost)
	if r := w.reservations("nvagain"); len(r) != 1 {
		t.Fatalf("reservations before re-creation %v, want the lost container's", r)
	}

	second := w.network("nvagain", "mnv5", "10.236.0.0/24", true)
	if clearedOn == "create" {
		if second, err = w.nv.create(second); err != nil {
			t.Fatalf("create again: %v", err)
		}
		if r := w.reservations("nvagain"); len(r) != 0 {
			t.Errorf("create of a network with another ID left the old one's reservations %v", r)
		}
		if rules := w.ruleset(); strings.Contains(rules, "18495") {
			t.Errorf("create of a network with another ID left the old one's published port:\n%s", rules)
		}
	}
	ctr := plugintestNetns(t)
	next := nvRequest{id: containerID(t), name: "api", ips: []string{"10.236.0.2"}}
	if _, err := w.nv.setup(ctr.Path(), next.body(second)); err != nil {
		t.Fatalf("setup with the address podman hands out again: %v", err)
	}
	wantA(t, ctr, "10.236.0.1", "api", "10.236.0.2")
	if r := w.reservations("nvagain"); len(r) != 1 || !strings.HasPrefix(r[0], next.id) {
		t.Errorf("reservations %v, want only the new container's", r)
	}
	if rules := w.ruleset(); strings.Contains(rules, "18495") {
		t.Errorf("the old container's published port is still in the ruleset:\n%s", rules)
	}
	if err := w.nv.teardown(ctr.Path(), next.body(second)); err != nil {
		t.Fatal(err)
	}
	w.gone(t, "nvagain", linksBefore)
}
