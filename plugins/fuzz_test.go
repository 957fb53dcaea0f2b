package plugins_test

import (
	"bytes"
	"strings"
	"testing"
	"unicode"

	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/plugintest"
)

// Fuzz targets of the framework's input handling: CNI_ARGS, and the whole dispatch
// (environment, stdin, version negotiation, LoadConf). Seeds are in testdata/fuzz; longer
// runs: scripts/fuzz.sh.

func FuzzParseCNIArgs(f *testing.F) {
	for _, s := range []string{"", "IgnoreUnknown=1;IP=10.0.0.5", "K8S_POD_NAME=web;K8S_POD_NAMESPACE=default",
		"IP=10.0.0.5,fd00::5;MAC=02:00:00:00:00:01", "=x", "a", ";;;", "FOO=bar", "IgnoreUnknown=true;FOO=a=b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		args, err := plugins.ParseCNIArgs(raw)
		if err != nil {
			if code := plugins.ToCNIError(err).Code; code != codes.InvalidEnvironment {
				t.Fatalf("ParseCNIArgs(%q): code %d, want 4: %v", raw, code, err)
			}
			if !strings.Contains(err.Error(), "CNI_ARGS") {
				t.Fatalf("error %q does not name CNI_ARGS", err)
			}
			return
		}
		ignore := args.Get("IgnoreUnknown") == "1" || strings.EqualFold(args.Get("IgnoreUnknown"), "true")
		for k, v := range args {
			if k == "" || strings.ContainsAny(k, "=;") || strings.Contains(v, ";") {
				t.Fatalf("ParseCNIArgs(%q) gave the pair %q=%q", raw, k, v)
			}
			if !ignore && !plugins.KnownCNIArgs[k] {
				t.Fatalf("ParseCNIArgs(%q) accepted the unknown key %q without IgnoreUnknown", raw, k)
			}
		}
	})
}

// fuzzConf has fields of each JSON kind, to give the decoder something to trip on.
type fuzzConf struct {
	plugins.NetConf
	Bridge string         `json:"bridge"`
	MTU    int            `json:"mtu"`
	Flag   bool           `json:"flag"`
	List   []string       `json:"list"`
	Nested map[string]int `json:"nested"`
}

// loadPlugin loads its config on every verb and records the call it got.
func loadPlugin(got **plugins.Call) plugins.Plugin {
	h := func(call *plugins.Call) error {
		*got = call
		var c fuzzConf
		return plugins.LoadConf(call, &c)
	}
	return plugins.Plugin{Name: "moor-fuzz", Add: h, Del: h, Check: h, GC: h, Status: h}
}

func FuzzDispatch(f *testing.F) {
	good := `{"cniVersion":"1.1.0","name":"net1","type":"moor-fuzz","mtu":1500,"args":{"cni":{"ips":["10.0.0.5/24"],"mac":"02:00:00:00:00:01"}},` +
		`"runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":8080,"protocol":"tcp"}],"aliases":{"net1":["a"]}},` +
		`"prevResult":{"cniVersion":"1.1.0","interfaces":[{"name":"eth0"}],"ips":[{"address":"10.0.0.5/24","interface":0}]}}`
	f.Add("ADD", "c1", "eth0", "IgnoreUnknown=1", []byte(good))
	f.Add("DEL", "../x", "eth0", "", []byte(good))
	f.Add("CHECK", "c1", "a/b", "", []byte(`{"cniVersion":"0.4.0","name":"n"}`))
	f.Add("GC", "", "", "", []byte(`{"cniVersion":"1.1.0","name":"n","cni.dev/valid-attachments":[{"containerID":"c","ifname":"eth0"}]}`))
	f.Add("STATUS", "", "", "", []byte(`{"cniVersion":"1.0.0","name":"n"}`))
	f.Add("ADD", "c1", "eth0", "", []byte(`{"cniVersion":"1.1.0","name":"../../etc","mtu":"x"}`))
	f.Add("ADD", "c1", "eth0", "IP=nope", []byte(`{"cniVersion":"1.1.0","name":"n","prevResult":{"ips":[{"address":"x"}]}}`))
	f.Fuzz(func(t *testing.T, cmd, containerID, ifName, cniArgs string, stdin []byte) {
		var call *plugins.Call
		_, err := plugintest.Run(loadPlugin(&call), plugintest.Invocation{
			Command: cmd, ContainerID: containerID, Netns: "/nonexistent/fuzz", IfName: ifName, Args: cniArgs, Config: stdin,
		})
		plugintest.CheckConfigError(t, err)
		if call == nil {
			return // refused before the handler: nothing reached a plugin
		}
		// Whatever reached a handler cannot escape a directory or break a rule comment.
		for field, v := range map[string]string{"CNI_CONTAINERID": call.ContainerID, "CNI_IFNAME": call.IfName, "name": call.NetworkName} {
			if strings.ContainsAny(v, "/\x00") || strings.IndexFunc(v, unicode.IsSpace) >= 0 || v == "." || v == ".." {
				t.Fatalf("%s %q reached the %s handler", field, v, cmd)
			}
		}
		if len(call.ContainerID) > 256 || len(call.IfName) > 15 || len(call.NetworkName) > 128 {
			t.Fatalf("overlong identity reached the handler: %q %q %q", call.ContainerID, call.IfName, call.NetworkName)
		}
	})
}

// Values that could escape a state directory or break a rule are refused before any
// handler runs; so are configs on stdin beyond plugins.MaxStdin. (The same through the
// binaries and libcni: integration/reliability_input_test.go.)
func TestHostileIdentityRefused(t *testing.T) {
	conf := []byte(`{"cniVersion":"1.1.0","name":"net1","type":"moor-fuzz"}`)
	cases := []struct {
		name string
		inv  plugintest.Invocation
		code uint
		says string
	}{
		{"container ID with ..", plugintest.Invocation{ContainerID: "../x"}, codes.InvalidEnvironment, "CNI_CONTAINERID"},
		{"container ID with /", plugintest.Invocation{ContainerID: "a/b"}, codes.InvalidEnvironment, "CNI_CONTAINERID"},
		{"container ID with NUL", plugintest.Invocation{ContainerID: "a\x00b"}, codes.InvalidEnvironment, "CNI_CONTAINERID"},
		{"container ID with a space", plugintest.Invocation{ContainerID: "a b"}, codes.InvalidEnvironment, "CNI_CONTAINERID"},
		{"overlong container ID", plugintest.Invocation{ContainerID: strings.Repeat("a", 257)}, codes.InvalidEnvironment, "CNI_CONTAINERID"},
		{"ifname ..", plugintest.Invocation{IfName: ".."}, codes.InvalidEnvironment, "CNI_IFNAME"},
		{"ifname with /", plugintest.Invocation{IfName: "a/b"}, codes.InvalidEnvironment, "CNI_IFNAME"},
		{"ifname with NUL", plugintest.Invocation{IfName: "eth\x00"}, codes.InvalidEnvironment, "CNI_IFNAME"},
		{"ifname with a space", plugintest.Invocation{IfName: "eth 0"}, codes.InvalidEnvironment, "CNI_IFNAME"},
		{"overlong ifname", plugintest.Invocation{IfName: "averyverylongifname"}, codes.InvalidEnvironment, "CNI_IFNAME"},
		{"ifname with a quote", plugintest.Invocation{IfName: `e"th0`}, codes.InvalidEnvironment, "CNI_IFNAME"},
		{"ifname with '", plugintest.Invocation{IfName: "e'th0"}, codes.InvalidEnvironment, "CNI_IFNAME"},
		{"ifname with =", plugintest.Invocation{IfName: "eth=0"}, codes.InvalidEnvironment, "CNI_IFNAME"},
		{"ifname with a backslash", plugintest.Invocation{IfName: `eth\0`}, codes.InvalidEnvironment, "CNI_IFNAME"},
		{"ifname with ;", plugintest.Invocation{IfName: "eth;0"}, codes.InvalidEnvironment, "CNI_IFNAME"},
		{"ifname with a leading .", plugintest.Invocation{IfName: ".eth0"}, codes.InvalidEnvironment, "CNI_IFNAME"},
		{"ifname with a leading -", plugintest.Invocation{IfName: "-eth0"}, codes.InvalidEnvironment, "CNI_IFNAME"},
		{"ifname with a non-ASCII letter", plugintest.Invocation{IfName: "ethé"}, codes.InvalidEnvironment, "CNI_IFNAME"},
		{"network ../x", plugintest.Invocation{Config: []byte(`{"cniVersion":"1.1.0","name":"../x"}`)}, codes.InvalidNetworkConfig, "name"},
		{"network a/b", plugintest.Invocation{Config: []byte(`{"cniVersion":"1.1.0","name":"a/b"}`)}, codes.InvalidNetworkConfig, "name"},
		{"network with NUL", plugintest.Invocation{Config: []byte(`{"cniVersion":"1.1.0","name":"a\u0000b"}`)}, codes.InvalidNetworkConfig, "name"},
		{"network with a space", plugintest.Invocation{Config: []byte(`{"cniVersion":"1.1.0","name":"a b"}`)}, codes.InvalidNetworkConfig, "name"},
		{"overlong network", plugintest.Invocation{Config: []byte(`{"cniVersion":"1.1.0","name":"` + strings.Repeat("n", 129) + `"}`)}, codes.InvalidNetworkConfig, "name"},
		{"stdin over the bound", plugintest.Invocation{Config: oversized(conf)}, codes.IOFailure, "larger than"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			inv := plugintest.Invocation{Command: "ADD", ContainerID: "c1", Netns: "/nonexistent/x", IfName: "eth0", Config: conf}
			if tc.inv.ContainerID != "" {
				inv.ContainerID = tc.inv.ContainerID
			}
			if tc.inv.IfName != "" {
				inv.IfName = tc.inv.IfName
			}
			if tc.inv.Config != nil {
				inv.Config = tc.inv.Config
			}
			var call *plugins.Call
			_, err := plugintest.Run(loadPlugin(&call), inv)
			if err == nil || err.Code != tc.code || !strings.Contains(err.Msg, tc.says) {
				t.Fatalf("got %v, want code %d naming %q", err, tc.code, tc.says)
			}
			if call != nil {
				t.Fatalf("the handler ran for a refused call")
			}
		})
	}
}

// oversized pads conf with whitespace (still valid JSON) to one byte over the bound.
func oversized(conf []byte) []byte {
	return append(bytes.Clone(conf), bytes.Repeat([]byte(" "), plugins.MaxStdin+1-len(conf))...)
}
