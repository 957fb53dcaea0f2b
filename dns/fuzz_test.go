package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/moornet/moor/dns/records"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/plugintest"
)

// FuzzDNSConf feeds configs and CNI_ARGS through the framework's dispatch into loadConf
// and namesFor (nothing is written, no sidecar is started) and checks that a refusal is a
// config error with a code, never a panic or a 999, and that every name that would be
// registered is a valid DNS name.
func FuzzDNSConf(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.1.0","name":"n","type":"moor-dns","domain":"dns.moor","upstreams":["10.0.0.53","[fd00::53]:5353"],"idleTimeout":"30s","waitTimeout":"3s","capabilities":{"aliases":true},"runtimeConfig":{"aliases":["web","www.site"]}}`), "K8S_POD_NAME=web;K8S_POD_NAMESPACE=default")
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"n","args":{"cni":{"name":"sharp_newton"}},"runtimeConfig":{"aliases":{"n":["a"],"other":["b"]}}}`), "IgnoreUnknown=1")
	f.Add([]byte(`{"cniVersion":"1.1.0","name":"n","port":0,"domain":"-bad-","waitTimeout":"-1s"}`), "")
	f.Add([]byte(`{"cniVersion":"1.1.0","name":"n","storeDir":"rel","prevResult":{"cniVersion":"1.1.0","ips":[{"address":"10.0.0.2/24","gateway":"10.0.0.1"}]}}`), "")
	f.Fuzz(func(t *testing.T, config []byte, cniArgs string) {
		var names []string
		err := plugintest.LoadOnly(plugin.Name, func(call *plugins.Call) error {
			c, err := loadConf(call)
			if err != nil {
				return err
			}
			if c.Port < 1 || c.Port > 65535 || c.wait <= 0 {
				t.Fatalf("port %d, waitTimeout %s loaded", c.Port, c.wait)
			}
			names, err = namesFor(call, c)
			return err
		}, config, cniArgs)
		plugintest.CheckConfigError(t, err)
		for _, n := range names {
			if records.ValidName(n) != nil || n != strings.ToLower(n) {
				t.Fatalf("name %q would be registered", n)
			}
		}
	})
}

// Every moor-dns field with a wrong type or range is refused with code 7 naming the field.
func TestDNSFieldsRefused(t *testing.T) {
	cases := []struct {
		field string
		value any
	}{
		{"domain", 5}, {"domain", "bad domain"}, {"domain", "-x.moor"}, {"domain", strings.Repeat("a", 64) + ".moor"},
		{"internal", "yes"}, {"upstreams", "10.0.0.53"}, {"upstreams", []string{"dns.example"}}, {"upstreams", []string{"10.0.0.53:0"}},
		{"storeDir", 5}, {"storeDir", "relative/records"}, {"controlSocket", []int{1}}, {"controlSocket", "dns.sock"},
		{"pidFile", true}, {"pidFile", "dns.pid"}, {"port", "53"}, {"port", 0}, {"port", 65536}, {"port", -1},
		{"idleTimeout", 30}, {"idleTimeout", "soon"}, {"waitTimeout", "0s"}, {"waitTimeout", "-1s"}, {"waitTimeout", "x"},
		{"keepPrivileges", "no"},
	}
	for _, tc := range cases {
		raw, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "n", "type": "moor-dns", tc.field: tc.value})
		err := plugintest.LoadOnly(plugin.Name, func(call *plugins.Call) error { _, err := loadConf(call); return err }, raw, "")
		if err == nil || err.Code != 7 || !strings.Contains(err.Msg, tc.field) {
			t.Errorf("%s = %v: got %v, want code 7 naming the field", tc.field, tc.value, err)
		}
	}
}
