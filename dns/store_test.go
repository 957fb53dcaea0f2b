package main

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/moornet/moor/plugins/codes"
)

func TestReadStoreConf(t *testing.T) {
	hostFile := filepath.Join(t.TempDir(), "machine-id")
	if err := os.WriteFile(hostFile, []byte("abc123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ok := []struct {
		conf     string
		wantType string
		wantHost string
		wantArgs []string
	}{
		{`{}`, storeLocal, "", nil},
		{`{"store":{"type":"local"}}`, storeLocal, "", nil},
		{`{"store":{"type":"etcd","endpoints":["http://10.0.0.1:2379"],"host":"h1","requestTimeout":"2s"}}`, storeEtcd, "h1",
			[]string{"--store", "etcd", "--etcd-prefix", "/moor/dns", "--etcd-host", "h1", "--etcd-timeout", "2s", "--etcd-endpoint", "http://10.0.0.1:2379"}},
		{`{"store":{"type":"etcd","endpoints":["e1","e2"],"hostFile":"` + hostFile + `","prefix":"/p","tls":{"caFile":"/ca"}}}`, storeEtcd, "abc123",
			[]string{"--store", "etcd", "--etcd-prefix", "/p", "--etcd-host", "abc123", "--etcd-timeout", "5s", "--etcd-endpoint", "e1", "--etcd-endpoint", "e2", "--etcd-ca", "/ca"}},
	}
	for _, tc := range ok {
		sc, err := readStoreConf([]byte(tc.conf))
		if err != nil {
			t.Errorf("%s: %v", tc.conf, err)
			continue
		}
		if sc.Type != tc.wantType || sc.Host != tc.wantHost || !slices.Equal(sc.serveArgs(), tc.wantArgs) {
			t.Errorf("%s: type %q host %q args %q", tc.conf, sc.Type, sc.Host, sc.serveArgs())
		}
	}
	bad := []struct {
		conf string
		code uint
	}{
		{`{"store":{"type":"zookeeper"}}`, codes.InvalidNetworkConfig},
		{`{"store":{"type":"etcd","host":"h"}}`, codes.InvalidNetworkConfig},
		{`{"store":{"type":"etcd","endpoints":["e"],"hostFile":"/nonexistent/id"}}`, codes.InvalidNetworkConfig},
		{`{"store":{"type":"etcd","endpoints":["e"],"host":"h","dialTimeout":"soon"}}`, codes.InvalidNetworkConfig},
		{`{"store":{"endpoints":["e"]}}`, codes.UnsupportedField},
		{`{"store":"etcd"}`, codes.InvalidNetworkConfig},
	}
	for _, tc := range bad {
		_, err := readStoreConf([]byte(tc.conf))
		var coded codes.Coded
		if !errors.As(err, &coded) || coded.CNICode() != tc.code {
			t.Errorf("%s: err %v, want code %d", tc.conf, err, tc.code)
		}
	}
}
