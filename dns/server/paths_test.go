package server

import (
	"path/filepath"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/moornet/moor/plugins/netnsid"
	"github.com/moornet/moor/plugins/plugintest"
)

// The machine's namespace keeps the historical paths; any other gets its own directory;
// MOOR_RUN_DIR (runDir) moves both.
func TestPathsFor(t *testing.T) {
	id := netnsid.ID{Dev: 4, Ino: 4026532208}
	tests := []struct {
		run     string
		machine bool
		want    Paths
	}{
		{"", true, Paths{StoreDir: "/run/moor/dns", ControlSocket: DefaultControlSocket, PidFile: DefaultPidFile}},
		{"", false, Paths{StoreDir: "/run/moor/netns/4-4026532208/dns", ControlSocket: "/run/moor/netns/4-4026532208/dns.sock", PidFile: "/run/moor/netns/4-4026532208/dns.pid"}},
		{"/tmp/r", true, Paths{StoreDir: "/tmp/r/dns", ControlSocket: "/tmp/r/dns.sock", PidFile: "/tmp/r/dns.pid"}},
		{"/tmp/r", false, Paths{StoreDir: "/tmp/r/netns/4-4026532208/dns", ControlSocket: "/tmp/r/netns/4-4026532208/dns.sock", PidFile: "/tmp/r/netns/4-4026532208/dns.pid"}},
	}
	for _, tt := range tests {
		if got := PathsFor(tt.run, id, tt.machine); got != tt.want {
			t.Errorf("PathsFor(%q, machine %v) = %+v, want %+v", tt.run, tt.machine, got, tt.want)
		}
	}
}

// PathsOf, called inside a namespace the test made, keys the paths by that namespace.
func TestPathsOfInANamespace(t *testing.T) {
	n := plugintest.Netns(t, "moordnsp")
	id, err := netnsid.Of(n.Path())
	if err != nil {
		t.Fatal(err)
	}
	run := t.TempDir()
	var got Paths
	var gotID netnsid.ID
	err = n.Do(func(ns.NetNS) error {
		var err error
		got, gotID, err = PathsOf(run)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if gotID != id || got.ControlSocket != filepath.Join(run, "netns", id.String(), "dns.sock") {
		t.Fatalf("PathsOf inside %s = %+v, %v; want the namespace %v's directory", n.Path(), got, gotID, id)
	}
}
