package plugins

import (
	"encoding/json"
	"reflect"
	"testing"
)

// TestConfMarshalUnchanged: RuntimeConfig and ArgsConf have a MarshalJSON only to keep
// encoding/json from analysing them before their key is seen; what they write is what
// encoding/json writes for their fields (tags, omitempty, the Aliases shapes), and it
// decodes back to the same value.
func TestConfMarshalUnchanged(t *testing.T) {
	args := &ArgsConf{}
	args.CNI.IPs, args.CNI.Mac, args.CNI.Name = []string{"10.0.0.5/24"}, "02:00:00:00:00:01", "web"
	args.CNI.Labels = []json.RawMessage{json.RawMessage(`{"key":"a","value":"b"}`)}
	cases := []struct {
		name string
		v    any
		want string
	}{
		{"empty runtimeConfig", RuntimeConfig{}, `{"aliases":null}`}, // a struct: omitempty does not apply
		{"runtimeConfig", RuntimeConfig{
			Mac: "02:00:00:00:00:01", IPs: []string{"10.0.0.5/24"},
			PortMappings: []PortMapping{{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}, {HostPort: 53, ContainerPort: 53, Protocol: "udp", HostIP: "127.0.0.1"}},
			Aliases:      Aliases{List: []string{"web", "<a&b>"}},
			IPRanges:     json.RawMessage(`[[{"subnet":"10.1.0.0/16"}]]`),
			Bandwidth:    json.RawMessage(`{"ingressRate":1000}`),
			CgroupPath:   "/sys/fs/cgroup/x",
		}, `{"mac":"02:00:00:00:00:01","ips":["10.0.0.5/24"],"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"},{"hostPort":53,"containerPort":53,"protocol":"udp","hostIP":"127.0.0.1"}],"aliases":["web","\u003ca\u0026b\u003e"],"ipRanges":[[{"subnet":"10.1.0.0/16"}]],"bandwidth":{"ingressRate":1000},"cgroupPath":"/sys/fs/cgroup/x"}`},
		{"aliases map", RuntimeConfig{Aliases: Aliases{Map: map[string][]string{"net": {"a"}}}}, `{"aliases":{"net":["a"]}}`},
		{"empty args", ArgsConf{}, `{"cni":{}}`},
		{"args", *args, `{"cni":{"ips":["10.0.0.5/24"],"mac":"02:00:00:00:00:01","name":"web","labels":[{"key":"a","value":"b"}]}}`},
		{"netConf with both", NetConf{Name: "n", RuntimeConfig: RuntimeConfig{Mac: "02:00:00:00:00:01"}, Args: args},
			`{"name":"n","ipam":{},"dns":{},"runtimeConfig":{"mac":"02:00:00:00:00:01","aliases":null},"args":{"cni":{"ips":["10.0.0.5/24"],"mac":"02:00:00:00:00:01","name":"web","labels":[{"key":"a","value":"b"}]}}}`},
	}
	for _, c := range cases {
		got, err := json.Marshal(c.v)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if string(got) != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.name, got, c.want)
		}
		back := reflect.New(reflect.TypeOf(c.v))
		if err := json.Unmarshal(got, back.Interface()); err != nil {
			t.Fatalf("%s: decoding back: %v", c.name, err)
		}
		if again, _ := json.Marshal(back.Elem().Interface()); string(again) != c.want {
			t.Errorf("%s: round trip changed it: %s", c.name, again)
		}
	}
}
