package inproc

import (
	"context"

	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/ipamclient"
)

// Plugin is moor-ipam as a plugin of its own: the binaries moor-ipam (every store this
// binary links: the local one) and moor-ipam-etcd (the etcd store too) are this value.
// An etcd-backed config given to moor-ipam is exec'd to moor-ipam-etcd, so moor-ipam itself
// stays free of the etcd client's start-up cost.
var Plugin = plugins.Plugin{
	Name: MoorIPAM,
	Add: func(call *plugins.Call) error {
		res, err := ipamclient.Add(context.Background(), call, MoorIPAM)
		if err != nil {
			return err
		}
		return call.PrintResult(res)
	},
	Del:   func(call *plugins.Call) error { return ipamclient.Del(context.Background(), call, MoorIPAM) },
	Check: func(call *plugins.Call) error { return ipamclient.Check(context.Background(), call, MoorIPAM) },
	GC:    func(call *plugins.Call) error { return ipamclient.GC(context.Background(), call, MoorIPAM) },
	// STATUS is 50 when the store cannot be used; a config error keeps its own code.
	Status: func(call *plugins.Call) error {
		err := ipamclient.Status(context.Background(), call, MoorIPAM)
		if err == nil || plugins.ToCNIError(err).Code == codes.InvalidNetworkConfig {
			return err
		}
		return codes.Wrap(codes.PluginNotAvailable, "moor-ipam store not usable", err)
	},
}
