package plugins_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/plugintest"
)

type echoConf struct {
	plugins.NetConf
	MTU int `json:"mtu"`
}

func (c *echoConf) Validate(*plugins.Call) error {
	if c.MTU < 0 || c.MTU > 65535 {
		return plugins.InvalidField("mtu", c.MTU, "must be between 0 and 65535")
	}
	return nil
}

// echo is a plugin whose ADD loads its config and prints a fixed result, and whose other
// verbs return the error the test puts in the config.
var echo = plugins.Plugin{
	Name: "moor-echo",
	Add: func(call *plugins.Call) error {
		var c echoConf
		if err := plugins.LoadConf(call, &c); err != nil {
			return err
		}
		zero := 0
		res := &current.Result{CNIVersion: current.ImplementedSpecVersion,
			Interfaces: []*current.Interface{{Name: call.IfName, Sandbox: call.Netns}},
			IPs:        []*current.IPConfig{{Interface: &zero, Address: mustCIDR("10.1.2.3/24")}},
		}
		if c.MAC != nil {
			res.Interfaces[0].Mac = c.MAC.String()
		}
		return call.PrintResult(res)
	},
	Del:    func(*plugins.Call) error { return nil },
	Check:  func(*plugins.Call) error { return nil },
	GC:     func(*plugins.Call) error { return nil },
	Status: func(*plugins.Call) error { return nil },
}

func add(conf []byte, mutate func(*plugintest.Invocation)) ([]byte, *types.Error) {
	inv := plugintest.Invocation{Command: "ADD", ContainerID: "c1", Netns: "/run/netns/x", IfName: "eth0", Config: conf}
	if mutate != nil {
		mutate(&inv)
	}
	return plugintest.Run(echo, inv)
}

func TestVersionNegotiation(t *testing.T) {
	out, err := plugintest.Run(echo, plugintest.Invocation{Command: "VERSION"})
	if err != nil {
		t.Fatalf("VERSION: %v", err)
	}
	var info struct{ SupportedVersions []string }
	if e := json.Unmarshal(out, &info); e != nil {
		t.Fatalf("VERSION output %q: %v", out, e)
	}
	if strings.Join(info.SupportedVersions, ",") != "0.3.0,0.3.1,0.4.0,1.0.0,1.1.0" {
		t.Fatalf("supportedVersions = %v", info.SupportedVersions)
	}
	for _, v := range plugins.SupportedVersions {
		t.Run(v, func(t *testing.T) {
			out, err := add(plugintest.Config(v, "net1", "moor-echo", nil), nil)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			var res struct {
				CNIVersion string `json:"cniVersion"`
				IPs        []struct {
					Version string `json:"version"`
					Address string `json:"address"`
				} `json:"ips"`
			}
			if e := json.Unmarshal(out, &res); e != nil {
				t.Fatalf("result %q: %v", out, e)
			}
			if res.CNIVersion != v {
				t.Errorf("result cniVersion = %q, want %q", res.CNIVersion, v)
			}
			if len(res.IPs) != 1 || res.IPs[0].Address != "10.1.2.3/24" {
				t.Errorf("ips = %+v", res.IPs)
			}
			// 0.3.x results carry "version" per IP; 1.0.0 dropped it.
			if wantVer := strings.HasPrefix(v, "0."); wantVer != (res.IPs[0].Version != "") {
				t.Errorf("ips[0].version = %q for cniVersion %s", res.IPs[0].Version, v)
			}
		})
	}
}

func TestErrorCodes(t *testing.T) {
	good := plugintest.Config("1.0.0", "net1", "moor-echo", nil)
	cases := []struct {
		name     string
		conf     []byte
		mutate   func(*plugintest.Invocation)
		wantCode uint
		wantMsg  string
	}{
		{"malformed JSON", []byte(`{"cniVersion":`), nil, 6, "decod"},
		{"unknown cniVersion", plugintest.Config("9.9.9", "net1", "moor-echo", nil), nil, 1, "9.9.9"},
		{"missing cniVersion", []byte(`{"name":"net1","type":"moor-echo"}`), nil, 1, "cniVersion"},
		{"CHECK on 0.3.1", plugintest.Config("0.3.1", "net1", "moor-echo", nil), func(i *plugintest.Invocation) { i.Command = "CHECK" }, 1, "0.4.0"},
		{"GC on 1.0.0", good, func(i *plugintest.Invocation) { i.Command = "GC" }, 1, "1.1.0"},
		{"STATUS on 0.4.0", plugintest.Config("0.4.0", "net1", "moor-echo", nil), func(i *plugintest.Invocation) { i.Command = "STATUS" }, 1, "1.1.0"},
		{"missing CNI_NETNS", good, func(i *plugintest.Invocation) { i.Netns = "" }, 4, "CNI_NETNS"},
		{"missing CNI_IFNAME on DEL", good, func(i *plugintest.Invocation) { i.Command = "DEL"; i.IfName = "" }, 4, "CNI_IFNAME"},
		{"container ID escaping", good, func(i *plugintest.Invocation) { i.ContainerID = "../etc" }, 4, "CNI_CONTAINERID"},
		{"container ID with slash", good, func(i *plugintest.Invocation) { i.ContainerID = "a/b" }, 4, "CNI_CONTAINERID"},
		{"container ID with NUL", good, func(i *plugintest.Invocation) { i.ContainerID = "a\x00b" }, 4, "CNI_CONTAINERID"},
		{"container ID overlong", good, func(i *plugintest.Invocation) { i.ContainerID = strings.Repeat("a", 300) }, 4, "CNI_CONTAINERID"},
		{"ifname with slash", good, func(i *plugintest.Invocation) { i.IfName = "a/b" }, 4, "CNI_IFNAME"},
		{"ifname with space", good, func(i *plugintest.Invocation) { i.IfName = "a b" }, 4, "CNI_IFNAME"},
		{"ifname overlong", good, func(i *plugintest.Invocation) { i.IfName = "abcdefghijklmnopq" }, 4, "CNI_IFNAME"},
		{"network name escaping", plugintest.Config("1.0.0", "../x", "moor-echo", nil), nil, 7, "name"},
		{"network name missing", plugintest.Config("1.0.0", "", "moor-echo", nil), nil, 7, "name"},
		{"wrong type", plugintest.Config("1.0.0", "net1", "moor-echo", map[string]any{"mtu": "big"}), nil, 7, "mtu"},
		{"wrong range", plugintest.Config("1.0.0", "net1", "moor-echo", map[string]any{"mtu": 70000}), nil, 7, "mtu 70000"},
		{"bad runtimeConfig.mac", plugintest.Config("1.0.0", "net1", "moor-echo", map[string]any{"runtimeConfig": map[string]any{"mac": "zz"}}), nil, 7, "runtimeConfig.mac"},
		{"bad CNI_ARGS pair", good, func(i *plugintest.Invocation) { i.Args = "novalue" }, 4, "CNI_ARGS"},
		{"unknown CNI_ARGS key", good, func(i *plugintest.Invocation) { i.Args = "FOO=bar" }, 4, "FOO"},
		{"oversized stdin", append(good[:len(good)-1], []byte(`,"pad":"`+strings.Repeat("x", plugins.MaxStdin)+`"}`)...), nil, 5, "larger"},
		{"unknown command", good, func(i *plugintest.Invocation) { i.Command = "FROB" }, 4, "FROB"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := add(tc.conf, tc.mutate)
			if err == nil {
				t.Fatalf("no error, want code %d", tc.wantCode)
			}
			if err.Code != tc.wantCode {
				t.Errorf("code = %d (%s), want %d", err.Code, err.Msg, tc.wantCode)
			}
			if !strings.Contains(err.Msg, tc.wantMsg) {
				t.Errorf("msg %q does not name %q", err.Msg, tc.wantMsg)
			}
		})
	}
}

func TestCNIArgsPrecedence(t *testing.T) {
	conf := plugintest.Config("1.0.0", "net1", "moor-echo", map[string]any{
		"args":          map[string]any{"cni": map[string]any{"mac": "02:00:00:00:00:02"}},
		"runtimeConfig": map[string]any{"mac": "02:00:00:00:00:03"},
	})
	cases := []struct {
		name string
		conf []byte
		args string
		want string
	}{
		{"CNI_ARGS only", plugintest.Config("1.0.0", "net1", "moor-echo", nil), "IgnoreUnknown=1;MAC=02:00:00:00:00:01;X=y", "02:00:00:00:00:01"},
		{"runtimeConfig wins", conf, "MAC=02:00:00:00:00:01", "02:00:00:00:00:03"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := add(tc.conf, func(i *plugintest.Invocation) { i.Args = tc.args })
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Errorf("result %s lacks MAC %s", out, tc.want)
			}
		})
	}
}

func TestToCNIError(t *testing.T) {
	cases := []struct {
		err  error
		want uint
	}{
		{plugins.InvalidField("mtu", 1, "x"), 7},
		{plugins.UnsupportedField("backend", "x", "y"), 2},
		{fmt.Errorf("wrapped: %w", plugins.ErrLockTimeout), 11},
		{fmt.Errorf("wrapped: %w", codes.New(codes.PoolExhausted, "pool")), 100},
		{types.NewError(51, "x", ""), 51},
		{fmt.Errorf("enslaving: %w", syscall.EXFULL), 112}, // a full bridge, from a step that did not name it
		{errors.New("a bug"), 999},
	}
	for _, tc := range cases {
		if got := plugins.ToCNIError(tc.err); got.Code != tc.want {
			t.Errorf("ToCNIError(%v).Code = %d, want %d", tc.err, got.Code, tc.want)
		}
	}
}

func TestAliasesBothShapes(t *testing.T) {
	var rc plugins.RuntimeConfig
	if err := json.Unmarshal([]byte(`{"aliases":{"net1":["a","b"],"other":["c"]}}`), &rc); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(rc.Aliases.For("net1"), ","); got != "a,b" {
		t.Errorf("map form: %q", got)
	}
	rc = plugins.RuntimeConfig{}
	if err := json.Unmarshal([]byte(`{"aliases":["x","y"],"portMappings":[{"HostPort":8080,"ContainerPort":80,"Protocol":"tcp"}]}`), &rc); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(rc.Aliases.For("net1"), ","); got != "x,y" {
		t.Errorf("list form: %q", got)
	}
	if rc.PortMappings[0].HostPort != 8080 || rc.PortMappings[0].ContainerPort != 80 {
		t.Errorf("capitalised portMappings keys not decoded: %+v", rc.PortMappings)
	}
}

func mustCIDR(s string) net.IPNet {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	n.IP = ip
	return *n
}

func TestOutermostCodeWins(t *testing.T) {
	inner := types.NewError(11, "etcd did not answer", "")
	err := codes.Wrap(codes.PluginNotAvailable, "IPAM moor-ipam", inner)
	if got := plugins.ToCNIError(err).Code; got != 50 {
		t.Errorf("code %d, want 50", got)
	}
	joined := errors.Join(errors.New("plain"), fmt.Errorf("x: %w", codes.New(codes.TryAgainLater, "lock")))
	if got := plugins.ToCNIError(joined).Code; got != 11 {
		t.Errorf("joined: code %d, want 11", got)
	}
}
