package runtimes

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"gopkg.in/yaml.v3"

	"github.com/moornet/moor/plugins/plugintest"
)

// The Kubernetes example (deploy/kubernetes/): its YAML parses, its objects reference each
// other consistently, the conflist it installs parses with libcni and names plugins that
// moor builds, and that conflist works (ADD, CHECK, DEL through libcni, pod names in DNS).

var deployDir = filepath.Join("..", "..", "deploy", "kubernetes")

// k8sObject is the part of a manifest the test reads.
type k8sObject struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name      string `yaml:"name"`
		Namespace string `yaml:"namespace"`
	} `yaml:"metadata"`
	Data map[string]string `yaml:"data"`
	Spec struct {
		Template struct {
			Spec podSpec `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type podSpec struct {
	ServiceAccountName string      `yaml:"serviceAccountName"`
	HostNetwork        bool        `yaml:"hostNetwork"`
	InitContainers     []container `yaml:"initContainers"`
	Containers         []container `yaml:"containers"`
	Volumes            []struct {
		Name     string `yaml:"name"`
		HostPath *struct {
			Path string `yaml:"path"`
		} `yaml:"hostPath"`
		ConfigMap *struct {
			Name string `yaml:"name"`
		} `yaml:"configMap"`
	} `yaml:"volumes"`
}

type container struct {
	Name         string   `yaml:"name"`
	Command      []string `yaml:"command"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
}

// loadManifests decodes every YAML document of deploy/kubernetes/*.yaml, by kind.
func loadManifests(t *testing.T) (map[string]k8sObject, string) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(deployDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", deployDir, err)
	}
	objs := map[string]k8sObject{}
	var raw strings.Builder
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		raw.Write(data)
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for {
			var o k8sObject
			err := dec.Decode(&o)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if o.APIVersion == "" || o.Kind == "" || o.Metadata.Name == "" || o.Metadata.Namespace == "" {
				t.Errorf("%s: an object without apiVersion, kind, name or namespace: %+v", f, o.Metadata)
			}
			if _, dup := objs[o.Kind]; dup {
				t.Errorf("%s: two objects of kind %s", f, o.Kind)
			}
			objs[o.Kind] = o
		}
	}
	for _, kind := range []string{"ServiceAccount", "ConfigMap", "DaemonSet"} {
		if _, ok := objs[kind]; !ok {
			t.Fatalf("no %s in %s", kind, deployDir)
		}
	}
	return objs, raw.String()
}

// shippedConflist returns the ConfigMap's conflist and the file name it is installed as.
func shippedConflist(t *testing.T, objs map[string]k8sObject) (string, []byte) {
	t.Helper()
	data := objs["ConfigMap"].Data
	if len(data) != 1 {
		t.Fatalf("the ConfigMap holds %d entries, want one conflist", len(data))
	}
	for name, body := range data {
		return name, []byte(body)
	}
	return "", nil
}

func TestKubernetesManifests(t *testing.T) {
	needSuite(t)
	objs, raw := loadManifests(t)
	ds := objs["DaemonSet"].Spec.Template.Spec
	if ds.ServiceAccountName != objs["ServiceAccount"].Metadata.Name {
		t.Errorf("the DaemonSet runs as %q, the ServiceAccount is %q", ds.ServiceAccountName, objs["ServiceAccount"].Metadata.Name)
	}
	if !ds.HostNetwork {
		t.Error("the DaemonSet is not hostNetwork: the DNS sidecar must bind the node's gateways")
	}
	volumes, hostPaths := map[string]bool{}, map[string]bool{}
	configMapUsed := false
	for _, v := range ds.Volumes {
		volumes[v.Name] = true
		if v.HostPath != nil {
			hostPaths[v.HostPath.Path] = true
		}
		if v.ConfigMap != nil && v.ConfigMap.Name == objs["ConfigMap"].Metadata.Name {
			configMapUsed = true
		}
	}
	if !configMapUsed {
		t.Error("no volume of the DaemonSet holds the ConfigMap")
	}
	for _, p := range []string{"/opt/cni/bin", "/etc/cni/net.d", "/run/moor"} {
		if !hostPaths[p] {
			t.Errorf("no hostPath volume for %s", p)
		}
	}
	commands := map[string]string{}
	for _, c := range append(append([]container{}, ds.InitContainers...), ds.Containers...) {
		commands[c.Name] = strings.Join(c.Command, " ")
		for _, m := range c.VolumeMounts {
			if !volumes[m.Name] {
				t.Errorf("container %s mounts volume %q, which the DaemonSet does not declare", c.Name, m.Name)
			}
		}
	}
	name, conflist := shippedConflist(t, objs)
	all := strings.Join(mapValues(commands), "\n")
	for _, want := range []string{"install.sh", "--loopback", "/host/opt/cni/bin", "/host/etc/cni/net.d/" + name, "moor-dns serve"} {
		if !strings.Contains(all, want) {
			t.Errorf("no container command has %q:\n%s", want, all)
		}
	}
	if !strings.Contains(raw, "moor-overlay\", \"agent\"") {
		t.Error("the overlay agent placeholder is missing")
	}

	// The conflist parses, every plugin it names is built by moor, and the sidecar serves
	// the paths its moor-dns entry names.
	list, err := libcni.ConfListFromBytes(conflist)
	if err != nil {
		t.Fatalf("the shipped conflist: %v", err)
	}
	for _, p := range list.Plugins {
		types := []string{p.Network.Type}
		if p.Network.IPAM.Type != "" {
			types = append(types, p.Network.IPAM.Type)
		}
		for _, typ := range types {
			if !fileExists(filepath.Join(suite.binDir, typ)) {
				t.Errorf("the conflist names plugin %q, which moor does not build", typ)
			}
		}
		if p.Network.Type != "moor-dns" {
			continue
		}
		var dnsConf map[string]any
		if err := json.Unmarshal(p.Bytes, &dnsConf); err != nil {
			t.Fatal(err)
		}
		for _, key := range []string{"storeDir", "controlSocket", "pidFile"} {
			if v, _ := dnsConf[key].(string); v == "" || !strings.Contains(commands["dns"], "="+v) {
				t.Errorf("moor-dns %s %q is not what the dns container serves: %s", key, v, commands["dns"])
			}
		}
	}
	dockerfile, err := os.ReadFile(filepath.Join(deployDir, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"/opt/moor/bin/", "/opt/moor/scripts/install.sh"} {
		if !strings.Contains(string(dockerfile), want) || !strings.Contains(all, strings.TrimSuffix(want, "/")) {
			t.Errorf("the Dockerfile and the DaemonSet disagree on %s", want)
		}
	}
}

func mapValues(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// moorHostPaths are the host-wide state paths a shipped conflist may name.
var moorHostPaths = []string{"/run/moor", "/var/lib/moor"}

// relocate rewrites every string of a JSON document that starts with one of moor's host
// paths so that it lives under dir instead.
func relocate(v any, dir string) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = relocate(e, dir)
		}
	case []any:
		for i, e := range x {
			x[i] = relocate(e, dir)
		}
	case string:
		for _, p := range moorHostPaths {
			if strings.HasPrefix(x, p) {
				return filepath.Join(dir, x)
			}
		}
	}
	return v
}

// The shipped conflist attaches a pod (in throwaway netns: one plays the node) and names
// it <pod> and <pod>.<namespace> in DNS, with its state paths moved into the test's dir.
func TestKubernetesConflistWorks(t *testing.T) {
	needSuite(t)
	objs, _ := loadManifests(t)
	_, conflist := shippedConflist(t, objs)
	state := t.TempDir()
	var doc map[string]any
	if err := json.Unmarshal(conflist, &doc); err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(relocate(doc, state))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte(`"/run/`)) || bytes.Contains(data, []byte(`"/var/`)) {
		t.Fatalf("a host path was not relocated: %s", data)
	}
	list, err := libcni.ConfListFromBytes(data)
	if err != nil {
		t.Fatal(err)
	}
	node := plugintest.Netns(t, netnsPrefix+"-k8snode")
	pod := plugintest.Netns(t, netnsPrefix+"-k8spod")
	// The node's own traffic to its gateway address (the sidecar's readiness probe) needs lo.
	if err := node.Do(func(ns.NetNS) error {
		lo, err := netlinksafe.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := stopSidecar(filepath.Join(state, "run", "moor", "dns.pid")); err != nil {
			t.Error(err)
		}
	})
	cni := libcni.NewCNIConfigWithCacheDir([]string{suite.binDir}, t.TempDir(), nil)
	rt := &libcni.RuntimeConf{
		ContainerID: "k8s" + plugintest.RandomSuffix(),
		NetNS:       pod.Path(),
		IfName:      "eth0",
		Args:        [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "shop"}, {"K8S_POD_NAME", "web"}},
	}
	var res *current.Result
	err = node.Do(func(ns.NetNS) error {
		ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
		defer cancel()
		r, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			return err
		}
		if res, err = current.NewResultFromResult(r); err != nil {
			return err
		}
		return cni.CheckNetworkList(ctx, list, rt)
	})
	if err != nil {
		t.Fatalf("ADD/CHECK of the shipped conflist: %v", err)
	}
	if len(res.IPs) != 1 || res.IPs[0].Gateway == nil {
		t.Fatalf("ADD result %+v, want one address with a gateway", res)
	}
	ip, gw := res.IPs[0].Address.IP.String(), res.IPs[0].Gateway.String()
	wantName(t, pod.Path(), gw, "web", ip)
	wantName(t, pod.Path(), gw, "web.shop", ip)
	err = node.Do(func(ns.NetNS) error {
		ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
		defer cancel()
		return cni.DelNetworkList(ctx, list, rt)
	})
	if err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if hasLink(pod, "eth0") {
		t.Error("the pod's eth0 left after DEL")
	}
	wantNoName(t, node.Path(), gw, "web.shop."+dnsDomain) // the pod is gone: ask from the node
}
