package etcdconf_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/moornet/moor/plugins/etcdconf"
)

// The same fields give the same result and the same errors in every plugin's store.
func TestFields(t *testing.T) {
	var ok etcdconf.Fields
	if err := json.Unmarshal([]byte(`{"endpoints":["http://e:2379"],"tls":{"certFile":"/c","keyFile":"/k"},"dialTimeout":1.5,"requestTimeout":"250ms"}`), &ok); err != nil {
		t.Fatal(err)
	}
	c, err := ok.Config("store")
	if err != nil || c.DialTimeout != 1500*time.Millisecond || c.RequestTimeout != 250*time.Millisecond || c.TLS.KeyFile != "/k" || c.Name() != "etcd http://e:2379" {
		t.Fatalf("config %+v, %v", c, err)
	}
	def, err := etcdconf.Fields{Endpoints: []string{"e"}}.Config("store")
	if err != nil || def.DialTimeout != etcdconf.DefaultDialTimeout || def.RequestTimeout != etcdconf.DefaultRequestTimeout {
		t.Fatalf("defaults %+v, %v", def, err)
	}
	for conf, field := range map[string]string{
		`{}`:                  "ipam.store.endpoints",
		`{"endpoints":[" "]}`: "ipam.store.endpoints[0]",
		`{"endpoints":["e"],"tls":{"keyFile":"k"}}`:  "ipam.store.tls",
		`{"endpoints":["e"],"dialTimeout":"soon"}`:   "ipam.store.dialTimeout",
		`{"endpoints":["e"],"requestTimeout":0}`:     "ipam.store.requestTimeout",
		`{"endpoints":["e"],"requestTimeout":"-1s"}`: "ipam.store.requestTimeout",
	} {
		var f etcdconf.Fields
		if err := json.Unmarshal([]byte(conf), &f); err != nil {
			t.Fatal(err)
		}
		_, err := f.Config("ipam.store")
		var fe *etcdconf.FieldError
		if !errors.As(err, &fe) || fe.Field != field || fe.CNICode() != 7 {
			t.Errorf("%s: %v, want code 7 naming %s", conf, err, field)
		}
	}
}
