package plugintest

import (
	"os/exec"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
)

// Exec runs a command inside the network namespace and returns its combined output; a
// failure fails the test with the output.
func Exec(t testing.TB, n ns.NetNS, name string, args ...string) string {
	t.Helper()
	var out []byte
	err := n.Do(func(ns.NetNS) error {
		var err error
		out, err = exec.Command(name, args...).CombinedOutput()
		return err
	})
	if err != nil {
		t.Fatalf("%s %v in %s: %v: %s", name, args, n.Path(), err, out)
	}
	return string(out)
}
