package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/moornet/moor/plugins/plugintest"
)

// opTimeout bounds one libcni call; a hung plugin fails the test instead of the run.
const opTimeout = 60 * time.Second

// runtime is a minimal CNI runtime: libcni with its own result cache, whose plugin
// processes run inside host (a netns the test made).
type runtime struct {
	t    *testing.T
	cni  *libcni.CNIConfig
	host ns.NetNS
}

func newRuntime(t *testing.T, host ns.NetNS) *runtime {
	return &runtime{t: t, host: host, cni: libcni.NewCNIConfigWithCacheDir([]string{binDir}, t.TempDir(), nil)}
}

// conflist builds a config list of one network with the given plugins.
func conflist(t *testing.T, version, name string, plugins ...map[string]any) *libcni.NetworkConfigList {
	t.Helper()
	raw, err := json.Marshal(map[string]any{"cniVersion": version, "name": name, "plugins": plugins})
	if err != nil {
		t.Fatal(err)
	}
	list, err := libcni.ConfListFromBytes(raw)
	if err != nil {
		t.Fatalf("conflist: %v", err)
	}
	return list
}

// inHost runs fn with the calling thread in the test's host netns, so plugins exec'd by
// libcni run there.
func (r *runtime) inHost(fn func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	return r.host.Do(func(ns.NetNS) error { return fn(ctx) })
}

func (r *runtime) add(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) (*current.Result, error) {
	var res types.Result
	err := r.inHost(func(ctx context.Context) error {
		var err error
		res, err = r.cni.AddNetworkList(ctx, list, rt)
		return err
	})
	if err != nil {
		return nil, err
	}
	return current.NewResultFromResult(res)
}

func (r *runtime) check(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	return r.inHost(func(ctx context.Context) error { return r.cni.CheckNetworkList(ctx, list, rt) })
}

func (r *runtime) del(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	return r.inHost(func(ctx context.Context) error { return r.cni.DelNetworkList(ctx, list, rt) })
}

func (r *runtime) gc(list *libcni.NetworkConfigList, valid ...*libcni.RuntimeConf) error {
	args := &libcni.GCArgs{ValidAttachments: []types.GCAttachment{}}
	for _, rt := range valid {
		args.ValidAttachments = append(args.ValidAttachments, types.GCAttachment{ContainerID: rt.ContainerID, IfName: rt.IfName})
	}
	return r.inHost(func(ctx context.Context) error { return r.cni.GCNetworkList(ctx, list, args) })
}

func (r *runtime) status(list *libcni.NetworkConfigList) error {
	return r.inHost(func(ctx context.Context) error { return r.cni.GetStatusNetworkList(ctx, list) })
}

func (r *runtime) version(pluginType string) ([]string, error) {
	var out []string
	err := r.inHost(func(ctx context.Context) error {
		info, err := r.cni.GetVersionInfo(ctx, pluginType)
		if err == nil {
			out = info.SupportedVersions()
		}
		return err
	})
	return out, err
}

// attachment is a container as the runtime sees it.
func attachment(netns ns.NetNS, ifName string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: "ctr" + plugintest.RandomSuffix(),
		NetNS:       netns.Path(),
		IfName:      ifName,
		Args:        [][2]string{{"IgnoreUnknown", "1"}},
	}
}

// cniCode extracts the CNI error code from a libcni error.
func cniCode(err error) uint {
	var e *types.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

func wantCode(t *testing.T, err error, code uint, mentions string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want code %d", code)
	}
	if got := cniCode(err); got != code {
		t.Fatalf("error %v: code %d, want %d", err, got, code)
	}
	if !strings.Contains(err.Error(), mentions) {
		t.Fatalf("error %q does not mention %q", err, mentions)
	}
}

// versionsFrom lists the spec versions from min on, for table-driven tests.
func versionsFrom(min string) []string {
	all := []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}
	for i, v := range all {
		if v == min {
			return all[i:]
		}
	}
	panic(fmt.Sprintf("unknown version %s", min))
}

func atLeast(v, min string) bool { return v >= min } // valid for the versions above
