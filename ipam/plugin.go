package main

import (
	"context"

	"github.com/moornet/moor/ipam/inproc"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
)

var plugin = plugins.Plugin{
	Name:   "moor-ipam",
	Add:    cmdAdd,
	Del:    func(call *plugins.Call) error { return inproc.Del(context.Background(), call) },
	Check:  func(call *plugins.Call) error { return inproc.Check(context.Background(), call) },
	GC:     func(call *plugins.Call) error { return inproc.GC(context.Background(), call) },
	Status: cmdStatus,
}

func cmdAdd(call *plugins.Call) error {
	res, err := inproc.Add(context.Background(), call)
	if err != nil {
		return err
	}
	return call.PrintResult(res)
}

// cmdStatus is 50 when the store cannot be used; a config error keeps its own code.
func cmdStatus(call *plugins.Call) error {
	err := inproc.Status(context.Background(), call)
	if err == nil || plugins.ToCNIError(err).Code == codes.InvalidNetworkConfig {
		return err
	}
	return codes.Wrap(codes.PluginNotAvailable, "moor-ipam store not usable", err)
}
