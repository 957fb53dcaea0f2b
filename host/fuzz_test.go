package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/plugintest"
)

// FuzzHostConf feeds configs and CNI_ARGS through the framework's dispatch into load
// (no link is looked up or moved) and checks that a refusal is a config error with a code.
func FuzzHostConf(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.1.0","name":"n","type":"moor-host"}`), "")
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"n","type":"moor-host","device":"02:00:00:00:00:01"}`), "IgnoreUnknown=1;IP=10.0.0.5")
	f.Add([]byte(`{"cniVersion":"1.1.0","name":"n","device":["eth0"]}`), "")
	f.Fuzz(func(t *testing.T, config []byte, cniArgs string) {
		err := plugintest.LoadOnly(plugin.Name, func(call *plugins.Call) error { _, err := load(call); return err }, config, cniArgs)
		plugintest.CheckConfigError(t, err)
	})
}

// A device of the wrong type is code 7 naming the field. (A device that names no link is
// refused by ADD, also with code 7: integration TestHostDeviceErrors.)
func TestHostFieldsRefused(t *testing.T) {
	for _, v := range []any{5, true, []string{"eth0"}, map[string]any{}} {
		raw, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "n", "type": "moor-host", "device": v})
		err := plugintest.LoadOnly(plugin.Name, func(call *plugins.Call) error { _, err := load(call); return err }, raw, "")
		if err == nil || err.Code != 7 || !strings.Contains(err.Msg, "device") {
			t.Errorf("device = %v: got %v, want code 7 naming the field", v, err)
		}
	}
}
