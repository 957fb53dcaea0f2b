package ipamclient_test

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/ipamclient"
	"github.com/moornet/moor/plugins/plugintest"
)

// recorder is an in-process IPAM that records the config it was given.
type recorder struct {
	got     []*plugins.NetConf
	decline bool
}

func (r *recorder) Add(_ context.Context, _ *plugins.Call, nc *plugins.NetConf) (*current.Result, func() error, error) {
	r.got = append(r.got, nc)
	if r.decline {
		return nil, nil, ipamclient.ErrNotInProcess
	}
	return &current.Result{CNIVersion: current.ImplementedSpecVersion}, func() error { return nil }, nil
}
func (r *recorder) Del(_ context.Context, _ *plugins.Call, nc *plugins.NetConf) error {
	r.got = append(r.got, nc)
	return nil
}
func (r *recorder) Check(context.Context, *plugins.Call, *plugins.NetConf) error  { return nil }
func (r *recorder) GC(context.Context, *plugins.Call, *plugins.NetConf) error     { return nil }
func (r *recorder) Status(context.Context, *plugins.Call, *plugins.NetConf) error { return nil }

type driverConf struct {
	plugins.NetConf
	Bridge string `json:"bridge"`
}

// The driver's loaded config reaches the in-process IPAM as is (one parse per call), its
// ipam section included; a rewritten stdin is loaded afresh; a declined call is exec'd to
// the registered fallback.
func TestInProcessGetsTheLoadedConf(t *testing.T) {
	rec := &recorder{}
	ipamclient.Register("test-ipam", rec, "test-ipam-fallback")
	conf := []byte(`{"cniVersion":"1.1.0","name":"net1","type":"drv","bridge":"b0","ipam":{"type":"test-ipam","subnet":"10.1.0.0/24"}}`)
	var loaded *driverConf
	drv := plugins.Plugin{Name: "drv",
		Add: func(call *plugins.Call) error {
			loaded = &driverConf{}
			if err := plugins.LoadConf(call, loaded); err != nil {
				return err
			}
			if _, err := ipamclient.Add(context.Background(), call, loaded.IPAM.Type); err != nil {
				return err
			}
			rewritten := *call
			rewritten.StdinData = []byte(strings.Replace(string(call.StdinData), "10.1.0.0/24", "10.2.0.0/24", 1))
			if err := ipamclient.Del(context.Background(), &rewritten, loaded.IPAM.Type); err != nil {
				return err
			}
			rec.decline = true
			_, err := ipamclient.Add(context.Background(), call, loaded.IPAM.Type)
			return err
		},
	}
	_, cerr := plugintest.Run(drv, plugintest.Invocation{Command: "ADD", ContainerID: "c1", Netns: "/x", IfName: "eth0", Config: conf, Path: t.TempDir()})
	if len(rec.got) != 3 || rec.got[0] != &loaded.NetConf {
		t.Fatalf("the in-process IPAM got %d configs, the first %p, want the driver's %p", len(rec.got), rec.got[0], &loaded.NetConf)
	}
	if string(rec.got[0].IPAM.Raw) != `{"type":"test-ipam","subnet":"10.1.0.0/24"}` {
		t.Errorf("ipam section %s", rec.got[0].IPAM.Raw)
	}
	if rec.got[1] == &loaded.NetConf || !strings.Contains(string(rec.got[1].IPAM.Raw), "10.2.0.0/24") {
		t.Errorf("a rewritten config was not loaded afresh: %s", rec.got[1].IPAM.Raw)
	}
	if cerr == nil || !strings.Contains(cerr.Msg, "test-ipam-fallback") {
		t.Errorf("declined call: %v, want the fallback looked up in CNI_PATH", cerr)
	}
}

// No package of the framework imports a driver, the IPAM implementation or a command:
// they depend on the framework, never the other way round.
func TestFrameworkImportsNoDriver(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/moornet/moor/plugins/...").CombinedOutput()
	if err != nil {
		var ee *exec.Error
		if errors.As(err, &ee) {
			t.Skip("no go command")
		}
		t.Fatalf("go list: %v\n%s", err, out)
	}
	var n int
	for _, pkg := range strings.Fields(string(out)) {
		rest, ok := strings.CutPrefix(pkg, "github.com/moornet/moor/")
		if !ok {
			continue
		}
		n++
		if !strings.HasPrefix(rest, "plugins") {
			t.Errorf("the framework depends on %s", pkg)
		}
	}
	if n < 5 {
		t.Fatalf("go list found only %d moor packages: %s", n, out)
	}
}
