package conflist

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const bridgeList = `{"cniVersion":"1.1.0","name":%q,"moor":{"labels":{"team":"db"}},"plugins":[
 {"type":"moor-bridge","bridge":"br-x","ipMasq":true,"mtu":1400,"firewallBackend":"iptables",
  "ipam":{"type":"moor-ipam","subnet":"10.70.0.0/24","dataDir":"/tmp/ipam"}},
 {"type":"moor-dns","domain":"corp.test","capabilities":{"aliases":true}}]}`

func write(t *testing.T, dir, file, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, file), []byte(content), FileMode); err != nil {
		t.Fatal(err)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "10-ref.conflist", `{"cniVersion":"1.0.0","name":"ref","plugins":[{"type":"bridge"}]}`)
	write(t, dir, "20-web.conflist", strings.Replace(bridgeList, "%q", `"web"`, 1))
	write(t, dir, "30-web-again.conflist", strings.Replace(bridgeList, "%q", `"web"`, 1))
	write(t, dir, "40-broken.conflist", `{"name":`)
	write(t, dir, "50-host.json", `{"cniVersion":"1.1.0","name":"hostnet","plugins":[{"type":"moor-host"}]}`)
	write(t, dir, "60-single.conf", `{"cniVersion":"0.4.0","name":"single","type":"moor-none"}`)
	write(t, dir, "README", "not a config")

	nets, errs := Load(dir)
	if len(nets) != 2 || nets[0].Name != "hostnet" || nets[1].Name != "web" {
		t.Fatalf("networks %v", names(nets))
	}
	var dup *DuplicateError
	var fe *FileError
	if len(errs) != 2 || !errors.As(errs[0], &dup) || !errors.As(errs[1], &fe) {
		t.Fatalf("errors %v, want a duplicate and an unreadable file", errs)
	}
	if !strings.HasSuffix(dup.First, "20-web.conflist") || !strings.HasSuffix(fe.File, "40-broken.conflist") {
		t.Errorf("duplicate %+v, file error %+v", dup, fe)
	}
	web := nets[1]
	if web.Driver != DriverBridge || web.ID != ID("web") || web.Created.IsZero() {
		t.Errorf("web %+v", web)
	}
	if web.Conf.Bridge != "br-x" || !web.Conf.IPMasq || web.Conf.MTU != 1400 || web.Conf.Firewall() != "iptables" || !web.Conf.Isolated() {
		t.Errorf("conf %+v", web.Conf)
	}
	if !web.HasMoorIPAM() || web.IPAM.Ranges[0][0].Subnet.String() != "10.70.0.0/24" || web.IPAM.DataDir != "/tmp/ipam" {
		t.Errorf("ipam %+v (%v)", web.IPAM, web.IPAMErr)
	}
	if web.DNS == nil || web.DNS.Domain != "corp.test" || web.Labels["team"] != "db" {
		t.Errorf("dns %+v labels %v", web.DNS, web.Labels)
	}
	opts := web.Options()
	if opts["bridge"] != "br-x" || opts["mtu"] != "1400" || opts["ipMasq"] != "true" || opts["ipam"] != "" {
		t.Errorf("options %v", opts)
	}
	if web.IPAMOptions()["dataDir"] != "/tmp/ipam" {
		t.Errorf("ipam options %v", web.IPAMOptions())
	}
	all, err := Names(dir)
	if err != nil || all["ref"] == "" || all["web"] != filepath.Join(dir, "20-web.conflist") {
		t.Errorf("names %v %v", all, err)
	}
}

func TestLoadMissingDirAndBadIPAM(t *testing.T) {
	if nets, errs := Load(filepath.Join(t.TempDir(), "none")); len(nets) != 0 || len(errs) != 0 {
		t.Errorf("missing dir: %v %v", nets, errs)
	}
	dir := t.TempDir()
	write(t, dir, "a.conflist", `{"cniVersion":"1.1.0","name":"bad","plugins":[{"type":"moor-bridge","ipam":{"type":"moor-ipam","subnet":"10.0.0.0/33"}}]}`)
	nets, _ := Load(dir)
	if len(nets) != 1 || nets[0].IPAMErr == nil || nets[0].HasMoorIPAM() || nets[0].Conf.Bridge != "cni0" {
		t.Fatalf("bad ipam network %+v", nets)
	}
	if !strings.Contains(nets[0].IPAMErr.Error(), "10.0.0.0/33") {
		t.Errorf("ipam error %v does not name the value", nets[0].IPAMErr)
	}
}

func TestResolve(t *testing.T) {
	nets := []*Network{{Name: "web", ID: ID("web")}, {Name: "db", ID: ID("db")}, {Name: ID("db")[:4], ID: ID(ID("db")[:4])}}
	for ref, want := range map[string]string{"web": "web", ID("web"): "web", ID("web")[:6]: "web", ID("db")[:4]: ID("db")[:4]} {
		n, err := Resolve(nets, ref)
		if err != nil || n.Name != want {
			t.Errorf("Resolve(%q) = %v, %v; want %s", ref, n, err, want)
		}
	}
	var nf *NotFoundError
	if _, err := Resolve(nets, "nope"); !errors.As(err, &nf) {
		t.Errorf("not found: %v", err)
	}
	var amb *AmbiguousError
	if _, err := Resolve(nets, ""); !errors.As(err, &nf) {
		t.Errorf("empty ref: %v", err)
	}
	prefix := commonPrefix(ID("web"), ID("db"))
	if _, err := Resolve(nets[:2], prefix); prefix != "" && !errors.As(err, &amb) {
		t.Errorf("ambiguous %q: %v", prefix, err)
	}
}

func commonPrefix(a, b string) string {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	return a[:i]
}

func TestWriteNew(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "net.d")
	path, err := WriteNew(dir, FileName("web"), []byte("{}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(path) != "60-moor-web.conflist" {
		t.Errorf("path %s", path)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != FileMode {
		t.Errorf("stat %v %v, want mode %v", st, err, FileMode)
	}
	var ex *ExistsError
	if _, err := WriteNew(dir, FileName("web"), []byte("{}\n")); !errors.As(err, &ex) {
		t.Errorf("second write: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("left behind: %v", entries)
	}
}

func names(nets []*Network) []string {
	var out []string
	for _, n := range nets {
		out = append(out, n.Name)
	}
	return out
}
