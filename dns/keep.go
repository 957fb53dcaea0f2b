package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/firewall"
	"github.com/moornet/moor/plugins/firewall/keeper"
)

// keepMain runs the host's firewall keeper (package keeper) in the foreground until
// SIGINT/SIGTERM or until no network has been recorded for idle-timeout. The bridge
// driver starts it; it stays root, unlike `moor-dns serve` (see package keeper for why).
func keepMain(args []string) int {
	fs := flag.NewFlagSet("moor-dns "+keeper.Command, flag.ContinueOnError)
	var o keeper.Options
	var logs plugins.DaemonFlags
	fs.StringVar(&o.State.Dir, "state-dir", firewall.DefaultStateDir(os.Getenv), "firewall state directory")
	fs.DurationVar(&o.IdleTimeout, "idle-timeout", keeper.DefaultIdleTimeout, "stop after this long with no network recorded")
	logs.Register(fs, "/var/log/moor/moor-dns-keep-firewall.log")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log, closeLog := logs.Logger("keep-firewall")
	defer closeLog()
	o.Log = log
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err := keeper.Run(ctx, o)
	switch {
	case err == nil, errors.Is(err, context.Canceled), errors.Is(err, keeper.ErrRunning):
		return 0
	default:
		fmt.Fprintf(os.Stderr, "moor-dns %s: %v\n", keeper.Command, err)
		return 1
	}
}
