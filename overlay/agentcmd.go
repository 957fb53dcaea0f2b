package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/moornet/moor/overlay/agent"
	"github.com/moornet/moor/overlay/netconf"
	"github.com/moornet/moor/plugins"
)

// agentMain runs `moor-overlay agent`: in the foreground until SIGINT/SIGTERM, or, with
// --leave, releases the host's leases (through the running agent when one answers) and
// exits.
func agentMain(args []string) int {
	fs := flag.NewFlagSet("moor-overlay agent", flag.ContinueOnError)
	var configs plugins.StringList
	var opts agent.Options
	var leave, rotate bool
	var logs plugins.DaemonFlags
	fs.Var(&configs, "config", "conflist (or plugin config) of an overlay network (repeatable)")
	fs.StringVar(&opts.HostID, "host-id", "", "host ID (default: the config's hostID, else /etc/machine-id)")
	fs.StringVar(&opts.Listen, "listen", "", "control socket path or loopback ip:port (default: the config's agentSocket)")
	fs.DurationVar(&opts.Resync, "resync", agent.DefaultResync, "full resync period")
	fs.BoolVar(&leave, "leave", false, "release this host's leases, remove its VXLAN devices and exit")
	fs.BoolVar(&rotate, "rotate-key", false, "replace this host's WireGuard key of every encrypted network (through the running agent when one answers) and exit")
	logs.Register(fs, "stderr")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if len(configs) == 0 {
		fmt.Fprintln(os.Stderr, "moor-overlay agent: at least one --config is required")
		return 2
	}
	for _, path := range configs {
		c, err := netconf.ParseFile(path)
		if err != nil {
			fmt.Fprintf(os.Stderr, "moor-overlay agent: %v\n", err)
			return 2
		}
		opts.Configs = append(opts.Configs, c)
	}
	logger, closeLog := logs.Logger("moor-overlay-agent")
	defer closeLog()
	opts.Logger = logger
	if opts.Listen == "" {
		opts.Listen = opts.Configs[0].AgentSocket
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if leave {
		return runLeave(ctx, opts)
	}
	if rotate {
		return runRotate(opts)
	}
	a, err := agent.New(opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "moor-overlay agent: %v\n", err)
		return 1
	}
	err = a.Run(ctx)
	switch {
	case errors.Is(err, agent.ErrLeft):
		logger.Info("left the overlay")
		return 0
	case err != nil:
		logger.Error("agent failed", "err", err)
		fmt.Fprintf(os.Stderr, "moor-overlay agent: %v\n", err)
		return 1
	}
	return 0
}

func runLeave(ctx context.Context, opts agent.Options) int {
	var err error
	if agent.Running(opts.Listen) {
		err = agent.RequestLeave(opts.Listen)
	} else {
		err = agent.Leave(ctx, opts)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "moor-overlay agent --leave: %v\n", err)
		return 1
	}
	return 0
}

func runRotate(opts agent.Options) int {
	var err error
	if agent.Running(opts.Listen) {
		err = agent.RequestRotateKey(opts.Listen)
	} else {
		err = agent.RotateKeys(opts)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "moor-overlay agent --rotate-key: %v\n", err)
		return 1
	}
	return 0
}
