package plugintest

import (
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
)

// ConfigCodes are the CNI codes a refused config or environment may carry: anything else
// (999 above all) means an input error that nobody classified, which the config fuzz
// targets report as a bug.
var ConfigCodes = map[uint]bool{
	codes.IncompatibleCNIVersion: true,
	codes.UnsupportedField:       true,
	codes.InvalidEnvironment:     true,
	codes.IOFailure:              true,
	codes.DecodingFailure:        true,
	codes.InvalidNetworkConfig:   true,
}

// LoadOnly runs load as the ADD of a plugin called name, through the framework's whole
// dispatch (environment checks, stdin bound, version negotiation), with config on stdin
// and cniArgs as CNI_ARGS. It is for fuzz targets of the drivers' config decoders: nothing
// but load runs, so no kernel object is touched as long as load only decodes and checks.
func LoadOnly(name string, load func(*plugins.Call) error, config []byte, cniArgs string) *types.Error {
	p := plugins.Plugin{Name: name, Add: load}
	_, err := Run(p, Invocation{
		Command:     "ADD",
		ContainerID: "fuzz",
		Netns:       "/nonexistent/fuzz-netns", // never opened: load does not touch the netns
		IfName:      "eth0",
		Args:        cniArgs,
		Config:      config,
	})
	return err
}

// CheckConfigError fails t when err (from LoadOnly) is not a config refusal: a code outside
// ConfigCodes or an empty message.
func CheckConfigError(t testing.TB, err *types.Error) {
	t.Helper()
	if err == nil {
		return
	}
	if !ConfigCodes[err.Code] {
		t.Fatalf("config refused with code %d (%q): want one of 1, 2, 4, 5, 6, 7", err.Code, err.Msg)
	}
	if err.Msg == "" {
		t.Fatalf("config refused with code %d and no message", err.Code)
	}
}
