package runtimes

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
)

// CRI scenario: containerd 1.6's CRI plugin, driven by crictl as the kubelet would, with
// moor's conflist as the first (and only) conflist of its conf_dir.

const (
	criReadyTimeout = 15 * time.Second
	protocolTCP     = 0 // runtime.v1.Protocol_TCP
	// teardownLine is what containerd 1.6 logs for every successful CNI DEL of a pod.
	teardownLine = "TearDown network for sandbox"
)

// criPod is a pod this test runs and the one container in it.
type criPod struct {
	name, namespace string
	id, ctrID       string
	ip, netns       string
}

// cri drives the containerd of the package through crictl.
type cri struct {
	t   *testing.T
	c   *containerdProc
	dir string
}

func (r *cri) must(args ...string) string {
	r.t.Helper()
	out, err := r.c.crictlCmd(args...)
	if err != nil {
		r.t.Fatal(err)
	}
	return out
}

// waitNetworkReady waits until the CRI plugin has loaded a CNI config.
func (r *cri) waitNetworkReady() {
	r.t.Helper()
	deadline := time.Now().Add(criReadyTimeout)
	for {
		var info struct {
			Status struct {
				Conditions []struct {
					Type   string `json:"type"`
					Status bool   `json:"status"`
				} `json:"conditions"`
			} `json:"status"`
		}
		out, err := r.c.crictlCmd("info", "--output", "json")
		if err == nil && json.Unmarshal([]byte(out), &info) == nil {
			for _, c := range info.Status.Conditions {
				if c.Type == "NetworkReady" && c.Status {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("the CRI network is not ready after %s: %v\n%s\ncontainerd log:\n%s", criReadyTimeout, err, out, r.c.logTail())
		}
		time.Sleep(pollInterval)
	}
}

// runPod runs a pod (with a hostPort when hostPort is not 0, and the network's gateway
// as its DNS server) and starts cmd in it.
func (r *cri) runPod(n *moorNet, name, namespace string, hostPort int, cmd ...string) *criPod {
	r.t.Helper()
	p := &criPod{name: name, namespace: namespace}
	podConf := map[string]any{
		"metadata":      map[string]any{"name": name, "namespace": namespace, "uid": name + "-" + namespace + "-uid", "attempt": 0},
		"hostname":      name,
		"log_directory": filepath.Join(r.dir, "logs", name),
		"dns_config":    map[string]any{"servers": []string{n.Gateway.String()}, "searches": []string{dnsDomain}},
		"linux":         map[string]any{},
	}
	if hostPort != 0 {
		podConf["port_mappings"] = []map[string]any{{"protocol": protocolTCP, "container_port": webPort, "host_port": hostPort}}
	}
	ctrConf := map[string]any{
		"metadata": map[string]any{"name": name},
		"image":    map[string]any{"image": busyboxImage},
		"command":  cmd,
		"log_path": name + ".log",
		"linux":    map[string]any{},
	}
	podFile, ctrFile := r.writeJSON(name+"-pod.json", podConf), r.writeJSON(name+"-ctr.json", ctrConf)
	p.id = r.must("runp", podFile)
	p.ctrID = r.must("create", p.id, ctrFile, podFile)
	r.must("start", p.ctrID)

	var inspect struct {
		Status struct {
			Network struct {
				IP string `json:"ip"`
			} `json:"network"`
		} `json:"status"`
		Info struct {
			RuntimeSpec struct {
				Linux struct {
					Namespaces []struct {
						Type string `json:"type"`
						Path string `json:"path"`
					} `json:"namespaces"`
				} `json:"linux"`
			} `json:"runtimeSpec"`
		} `json:"info"`
	}
	if err := json.Unmarshal([]byte(r.must("inspectp", "--output", "json", p.id)), &inspect); err != nil {
		r.t.Fatalf("crictl inspectp %s: %v", name, err)
	}
	p.ip = inspect.Status.Network.IP
	for _, ns := range inspect.Info.RuntimeSpec.Linux.Namespaces {
		if ns.Type == "network" {
			p.netns = ns.Path
		}
	}
	if p.netns == "" {
		r.t.Fatalf("pod %s has no network namespace path", name)
	}
	return p
}

func (r *cri) writeJSON(name string, v any) string {
	r.t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		r.t.Fatal(err)
	}
	path := filepath.Join(r.dir, name)
	if err := os.WriteFile(path, data, fileMode); err != nil {
		r.t.Fatal(err)
	}
	return path
}

// loUp reports whether lo is up in the pod's netns (containerd calls the `loopback`
// plugin, here moor-none, for every pod).
func loUp(nsPath string) (bool, error) {
	netns, err := ns.GetNS(nsPath)
	if err != nil {
		return false, err
	}
	defer netns.Close()
	up := false
	err = netns.Do(func(ns.NetNS) error {
		lo, err := netlinksafe.LinkByName("lo")
		if err == nil {
			up = lo.Attrs().Flags&net.FlagUp != 0
		}
		return err
	})
	return up, err
}

func TestContainerdCRI(t *testing.T) {
	watchHost(t)
	n := newMoorNet(t)
	c := sharedContainerd(t)
	if c.crictl == "" {
		t.Skip("crictl is not installed (scripts/runtime-deps.sh installs it)")
	}
	r := &cri{t: t, c: c, dir: t.TempDir()}
	conf := n.write(c.confDir, "10-"+n.Name+".conflist")
	t.Cleanup(func() {
		if out, err := c.crictlCmd("rmp", "--all", "--force"); err != nil {
			t.Errorf("removing pods: %v %s", err, out)
		}
		os.Remove(conf)
	})
	r.waitNetworkReady()

	port := freePort(t)
	web := r.runPod(n, "web", "shop", port, "httpd", "-f", "-p", fmt.Sprint(webPort), "-h", "/www")
	client := r.runPod(n, "client", "admin", 0, "sleep", "600")
	n.inSubnet("web pod", web.ip)
	n.inSubnet("client pod", client.ip)
	for _, p := range []*criPod{web, client} {
		if up, err := loUp(p.netns); err != nil || !up {
			t.Errorf("pod %s: lo up %v (%v): the loopback plugin did not run", p.name, up, err)
		}
	}

	// K8S_POD_NAME and K8S_POD_NAMESPACE are the pod's names: <pod>, <pod>.<namespace>.
	gw := n.Gateway.String()
	wantName(t, client.netns, gw, "web", web.ip)
	wantName(t, client.netns, gw, "web.shop", web.ip)
	wantName(t, client.netns, gw, "web.shop."+dnsDomain, web.ip)
	wantName(t, web.netns, gw, "client.admin", client.ip)
	wantNoName(t, client.netns, gw, "web.admin."+dnsDomain)
	if out, err := c.crictlCmd("exec", client.ctrID, "ping", "-c", "1", "-W", "2", "web.shop"); err != nil {
		t.Errorf("client cannot ping web.shop by name: %v %s", err, out)
	}

	// The hostPort (containerd sends portMappings with capitalised keys) answers on the host.
	wantServed(t, hostPort(gw, port))

	// stopp tears the network down; rmp calls DEL again, with an empty netns, which succeeds.
	for _, p := range []*criPod{web, client} {
		r.must("stopp", p.id)
		if fileExists(p.netns) {
			t.Errorf("pod %s: netns %s left after stopp", p.name, p.netns)
		}
	}
	n.noAttachments("crictl stopp")
	for _, p := range []*criPod{web, client} {
		r.must("rmp", p.id)
		if got := c.logCount(teardownLine, p.id, "successfully"); got < 2 {
			t.Errorf("pod %s: %d successful CNI teardowns in containerd's log, want 2 (stopp and rmp)", p.name, got)
		}
		if got := c.logCount(p.id, "level=error"); got > 0 {
			t.Errorf("pod %s: containerd logged %d errors:\n%s", p.name, got, c.logTail())
		}
	}
	n.noAttachments("crictl rmp")
	if out := r.must("pods", "--quiet"); strings.TrimSpace(out) != "" {
		t.Errorf("pods left: %s", out)
	}
}
