package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/pluginexec"
)

// etcdBinary is the build of moor-dns that links the etcd record store. moor-dns itself
// does not (store_noetcd.go): a config whose store is etcd is handed to it whole, with the
// same CNI environment and stdin, and its output is moor-dns's. It is looked for beside
// this executable first, then in CNI_PATH.
const etcdBinary = "moor-dns-etcd"

// wantsEtcd reports whether the config's store is etcd (checked in full by the binary
// that links it).
func wantsEtcd(stdin []byte) bool {
	var top struct {
		Store *struct {
			Type string `json:"type"`
		} `json:"store"`
	}
	return json.Unmarshal(stdin, &top) == nil && top.Store != nil && top.Store.Type == storeEtcd
}

// findEtcdBinary locates moor-dns-etcd.
func findEtcdBinary(cniPath string) (string, error) {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), etcdBinary)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	p, err := pluginexec.Find(etcdBinary, cniPath)
	if err != nil {
		return "", codes.Wrap(codes.InvalidEnvironment, fmt.Sprintf("store.type %q needs %s beside moor-dns or in CNI_PATH %q", storeEtcd, etcdBinary, cniPath), err)
	}
	return p, nil
}

// delegating runs fn here unless the call's store is etcd and this binary lacks it; then
// moor-dns-etcd runs the call and its result (or CNI error) is this call's.
func delegating(fn func(*plugins.Call) error) func(*plugins.Call) error {
	if etcdLinked {
		return fn
	}
	return func(call *plugins.Call) error {
		if !wantsEtcd(call.StdinData) {
			return fn(call)
		}
		bin, err := findEtcdBinary(call.Path)
		if err != nil {
			return err
		}
		out, err := pluginexec.Run(context.Background(), bin, call.StdinData, os.Environ())
		if err != nil {
			return err
		}
		_, err = call.Stdout.Write(out)
		return err
	}
}

// execEtcdServe replaces this process with `moor-dns-etcd serve args...` (a sidecar of an
// etcd store started by hand or by a unit). It returns only on failure.
func execEtcdServe(args []string) int {
	bin, err := findEtcdBinary(os.Getenv("CNI_PATH"))
	if err == nil {
		err = syscall.Exec(bin, append([]string{bin, "serve"}, args...), os.Environ())
	}
	fmt.Fprintf(os.Stderr, "moor-dns serve: %v\n", err)
	return 1
}
