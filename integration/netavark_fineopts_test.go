package integration

import (
	"strings"
	"testing"
)

// TestNetavarkDockerOptions: podman's path with Docker's option names, on each firewall
// backend. A network created with com.docker.network.bridge.enable_icc=false and
// com.docker.network.bridge.host_binding_ipv4 keeps its two containers apart (both
// ways), publishes a port without hostIP on the binding address only, and lets the other
// container reach that port through the host's address; teardown leaves nothing.
func TestNetavarkDockerOptions(t *testing.T) {
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			w := newNVWorld(t)
			w.backend = backend
			linksBefore := w.hostLinks()
			in := w.network("nvfine", "mnv1", "10.232.0.0/24", false)
			in["options"] = map[string]any{"firewallBackend": backend,
				"com.docker.network.bridge.enable_icc":        "false",
				"com.docker.network.bridge.host_binding_ipv4": hostUplinkIP}
			network, err := w.nv.create(in)
			if err != nil {
				t.Fatalf("create: %v", err)
			}
			webNS, dbNS := plugintestNetns(t), plugintestNetns(t)
			web := nvRequest{id: containerID(t), name: "web", ips: []string{"10.232.0.10"},
				ports: []map[string]any{{"container_port": 80, "host_ip": "", "host_port": 18490, "protocol": "tcp", "range": 1}}}
			db := nvRequest{id: containerID(t), name: "db", ips: []string{"10.232.0.11"}}
			for _, c := range []struct {
				netns string
				req   nvRequest
			}{{webNS.Path(), web}, {dbNS.Path(), db}} {
				if _, err := w.nv.setup(c.netns, c.req.body(network)); err != nil {
					t.Fatalf("setup %s: %v", c.req.name, err)
				}
			}
			conf := w.ruleset()
			serveTCP(t, webNS, ":80")
			serveTCP(t, dbNS, ":80")
			if got, err := dialTCP(dbNS, "10.232.0.10:80"); err == nil {
				t.Errorf("icc false: db reached web directly (seen as %s)", got)
			}
			if got, err := dialTCP(webNS, "10.232.0.11:80"); err == nil {
				t.Errorf("icc false: web reached db directly (seen as %s)", got)
			}
			if got, err := dialEventually(w.outside, hostUplinkIP+":18490"); err != nil {
				t.Errorf("published port on the binding address from outside: %v", err)
			} else if !strings.HasPrefix(got, "10.250.0.") {
				t.Errorf("published port from outside seen as %s", got)
			}
			if got, err := dialEventually(dbNS, hostUplinkIP+":18490"); err != nil {
				t.Errorf("db to web's published port on the host's address: %v", err)
			} else if got != "10.232.0.1" {
				t.Errorf("db to web's published port seen as %s, want the gateway (hairpin masquerade)", got)
			}
			if got, err := dialTCP(dbNS, "10.232.0.1:18490"); err == nil {
				t.Errorf("the port answered on the gateway although host_binding_ipv4 is %s (seen as %s)", hostUplinkIP, got)
			}
			for _, c := range []struct {
				netns string
				req   nvRequest
			}{{webNS.Path(), web}, {dbNS.Path(), db}} {
				if err := w.nv.teardown(c.netns, c.req.body(network)); err != nil {
					t.Errorf("teardown %s: %v", c.req.name, err)
				}
			}
			w.gone(t, "nvfine", linksBefore)
			if t.Failed() {
				t.Logf("ruleset while attached:\n%s", conf)
			}
		})
	}
}
