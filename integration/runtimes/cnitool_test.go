package runtimes

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/moornet/moor/plugins/plugintest"
)

// cnitool scenario: cnitool 1.3 (libcni 1.3, spec 1.1.0: it picks 1.1.0 from the
// conflist's cniVersions) adds, checks, deletes and garbage-collects attachments of
// netns this test creates, with NETCONFPATH and CNI_PATH pointing at moor's.

type cnitool struct {
	t    *testing.T
	bin  string
	env  []string
	name string // the network
}

// run calls cnitool on netns, with CNI_ARGS naming the container and CAP_ARGS.
func (c *cnitool) run(verb string, netns ns.NetNS, podName string, capArgs map[string]any) (string, error) {
	env := append([]string{}, c.env...)
	if podName != "" {
		env = append(env, "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAME="+podName)
	}
	if capArgs != nil {
		data, err := json.Marshal(capArgs)
		if err != nil {
			return "", err
		}
		env = append(env, "CAP_ARGS="+string(data))
	}
	return command(env, c.bin, verb, c.name, netns.Path())
}

func (c *cnitool) must(verb string, netns ns.NetNS, podName string, capArgs map[string]any) string {
	c.t.Helper()
	out, err := c.run(verb, netns, podName, capArgs)
	if err != nil {
		c.t.Fatal(err)
	}
	return out
}

// addResult is the part of the ADD result the test reads.
type addResult struct {
	CNIVersion string `json:"cniVersion"`
	IPs        []struct {
		Address string `json:"address"`
	} `json:"ips"`
	DNS struct {
		Nameservers []string `json:"nameservers"`
		Search      []string `json:"search"`
	} `json:"dns"`
}

// serveIndex answers the busybox image's page on webPort inside netns until the test ends.
func serveIndex(t *testing.T, netns ns.NetNS) {
	t.Helper()
	var l net.Listener
	err := netns.Do(func(ns.NetNS) error {
		var err error
		l, err = net.Listen("tcp", fmt.Sprintf(":%d", webPort))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, indexBody) })}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
}

// hasLink reports whether netns has a link of that name.
func hasLink(netns ns.NetNS, name string) bool {
	found := false
	_ = netns.Do(func(ns.NetNS) error {
		_, err := netlinksafe.LinkByName(name)
		found = err == nil
		return nil
	})
	return found
}

func TestCnitool(t *testing.T) {
	bin := tool(t, "cnitool")
	watchHost(t)
	n := newMoorNet(t)
	confDir := t.TempDir()
	n.write(confDir, n.Name+".conflist")
	c := &cnitool{t: t, bin: bin, name: n.Name, env: []string{"NETCONFPATH=" + confDir, "CNI_PATH=" + suite.binDir, "CNI_IFNAME=eth0"}}
	alpha, beta := plugintest.Netns(t, netnsPrefix), plugintest.Netns(t, netnsPrefix)

	port := freePort(t)
	ports := map[string]any{"portMappings": []map[string]any{{"hostPort": port, "containerPort": webPort, "protocol": "tcp"}}}
	var alphaRes, betaRes addResult
	if err := json.Unmarshal([]byte(c.must("add", alpha, "alpha", ports)), &alphaRes); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(c.must("add", beta, "beta", nil)), &betaRes); err != nil {
		t.Fatal(err)
	}
	if alphaRes.CNIVersion != "1.1.0" || len(alphaRes.IPs) != 1 || len(betaRes.IPs) != 1 {
		t.Fatalf("ADD results: %+v %+v, want one address each, spec 1.1.0", alphaRes, betaRes)
	}
	gw := n.Gateway.String()
	if len(alphaRes.DNS.Nameservers) != 1 || alphaRes.DNS.Nameservers[0] != gw {
		t.Errorf("ADD result's DNS %+v, want the gateway %s", alphaRes.DNS, gw)
	}
	alphaIP, _, _ := net.ParseCIDR(alphaRes.IPs[0].Address)
	betaIP, _, _ := net.ParseCIDR(betaRes.IPs[0].Address)
	n.inSubnet("alpha", alphaIP.String())
	n.inSubnet("beta", betaIP.String())
	wantName(t, beta.Path(), gw, "alpha", alphaIP.String())
	wantName(t, alpha.Path(), gw, "beta", betaIP.String())
	serveIndex(t, alpha)
	// Published without hostIP: the host's addresses, not its loopback (publishLoopback).
	wantServed(t, hostPort(gw, port))

	for _, netns := range []ns.NetNS{alpha, beta} {
		c.must("check", netns, "", nil)
	}
	c.must("status", alpha, "", nil)

	// DEL removes alpha's interface and name; beta keeps working.
	c.must("del", alpha, "alpha", ports)
	if hasLink(alpha, "eth0") {
		t.Error("alpha's eth0 left after DEL")
	}
	wantNoName(t, beta.Path(), gw, "alpha."+dnsDomain)
	wantName(t, beta.Path(), gw, "beta", betaIP.String())

	// cnitool gc passes no valid attachment: libcni DELs beta (cached) and every plugin
	// drops what the network still holds.
	c.must("gc", beta, "", nil)
	if hasLink(beta, "eth0") {
		t.Error("beta's eth0 left after GC")
	}
	n.noAttachments("cnitool del and gc")
	// DEL stays repeatable after GC.
	c.must("del", beta, "beta", nil)
}
