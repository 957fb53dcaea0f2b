package main

import (
	"testing"

	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/plugintest"
)

// FuzzNoneConf feeds configs and CNI_ARGS through the framework's dispatch into the
// config load of moor-none (nothing else runs) and checks that a refusal is a config error
// with a code, never a panic or a 999.
func FuzzNoneConf(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.1.0","name":"n","type":"moor-none"}`), "")
	f.Add([]byte(`{"cniVersion":"0.3.0","name":"n","type":"moor-none","prevResult":{"cniVersion":"0.3.0","ips":[{"version":"4","address":"10.0.0.2/24"}]}}`), "IgnoreUnknown=1")
	f.Fuzz(func(t *testing.T, config []byte, cniArgs string) {
		err := plugintest.LoadOnly(plugin.Name, func(call *plugins.Call) error {
			var c conf
			return plugins.LoadConf(call, &c)
		}, config, cniArgs)
		plugintest.CheckConfigError(t, err)
	})
}
