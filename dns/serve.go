package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/moornet/moor/dns/server"
	"github.com/moornet/moor/plugins"
)

// serveMain runs the sidecar in the foreground until SIGINT/SIGTERM or, when idle-timeout
// is not negative, until no network has records left for that long. It is what the
// plugin starts, and what a systemd unit or a Kubernetes DaemonSet runs.
func serveMain(args []string) int {
	fs := flag.NewFlagSet("moor-dns serve", flag.ContinueOnError)
	var opts server.Options
	var upstreams plugins.StringList
	var logs plugins.DaemonFlags
	fs.StringVar(&opts.StoreDir, "store-dir", "", "record store directory (default: the namespace's, /run/moor/dns in the machine's)")
	fs.IntVar(&opts.Port, "port", server.DefaultPort, "port to serve on every gateway address")
	fs.StringVar(&opts.ControlSocket, "control-socket", "", "unix socket for /healthz, /metrics and /reload (default: the namespace's, /run/moor/dns.sock in the machine's)")
	fs.StringVar(&opts.ControlAddr, "control-addr", "", "serve the control API on this loopback ip:port instead of the socket")
	fs.StringVar(&opts.PidFile, "pid-file", "", "pid file locked while serving (default: the namespace's, /run/moor/dns.pid in the machine's)")
	fs.DurationVar(&opts.IdleTimeout, "idle-timeout", server.DefaultIdleTimeout, "stop after this long without records (negative: never)")
	fs.DurationVar(&opts.NetnsCheck, "netns-check", server.DefaultNetnsCheck, "how often to check that the network namespace still exists (negative: never)")
	fs.DurationVar(&opts.TTL, "ttl", server.DefaultTTL, "TTL of local answers")
	fs.StringVar(&opts.Domain, "domain", server.DefaultDomain, "search domain of networks that set none")
	fs.StringVar(&opts.ResolvConf, "resolv-conf", server.DefaultResolvConf, "the host's resolver file")
	fs.Var(&upstreams, "upstream", "upstream resolver ip[:port] (repeatable; default: from --resolv-conf)")
	fs.BoolVar(&opts.KeepPrivileges, "keep-privileges", false, "do not drop capabilities and root after binding")
	fs.IntVar(&opts.UID, "uid", server.DefaultUID, "uid to switch to after binding")
	fs.IntVar(&opts.GID, "gid", server.DefaultGID, "gid to switch to after binding (the record store is opened to this group)")
	fs.BoolVar(&opts.FirewallRepair, "firewall-repair", true, "repair moor's firewall rules of this network namespace after a firewall reload (keeps CAP_NET_ADMIN)")
	fs.StringVar(&opts.FirewallRunDir, "firewall-run-dir", "", "run directory of the firewall's state and lock (default: $MOOR_RUN_DIR or /run/moor)")
	logs.Register(fs, "/var/log/moor/moor-dns-serve.log")
	var sc storeConf
	var endpoints plugins.StringList
	fs.StringVar(&sc.Type, "store", storeLocal, `record store: "local" (--store-dir) or "etcd" (overlay networks)`)
	fs.Var(&endpoints, "etcd-endpoint", "etcd endpoint of the etcd store (repeatable)")
	fs.StringVar(&sc.Prefix, "etcd-prefix", "", "key prefix of the etcd store (default /moor/dns)")
	fs.StringVar(&sc.Host, "etcd-host", "", "this host's ID in the etcd store (default: /etc/machine-id)")
	fs.StringVar(&sc.TLS.CertFile, "etcd-cert", "", "etcd client certificate")
	fs.StringVar(&sc.TLS.KeyFile, "etcd-key", "", "etcd client key")
	fs.StringVar(&sc.TLS.CAFile, "etcd-ca", "", "CA that signs the etcd servers")
	etcdTimeout := fs.String("etcd-timeout", "", "bound of each etcd request (default 5s)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	sc.Endpoints = endpoints
	if sc.Type == storeEtcd && !etcdLinked {
		return execEtcdServe(args)
	}
	if err := defaultPaths(&opts); err != nil {
		fmt.Fprintf(os.Stderr, "moor-dns serve: %v\n", err)
		return 1
	}
	if *etcdTimeout != "" {
		sc.RequestTimeout = json.RawMessage(strconv.Quote(*etcdTimeout))
	}
	if err := sc.check(); err != nil {
		fmt.Fprintf(os.Stderr, "moor-dns serve: %v\n", err)
		return 2
	}
	if sc.Type == storeEtcd {
		st, err := sc.open("")
		if err != nil {
			fmt.Fprintf(os.Stderr, "moor-dns serve: %v\n", err)
			return 1
		}
		defer st.Close()
		opts.Store = st
	}
	opts.Upstreams = upstreams
	logger, closeLog := logs.Logger("moor-dns-serve")
	defer closeLog()
	opts.Logger = logger

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err := server.Run(ctx, opts)
	var already *server.AlreadyRunningError
	switch {
	case errors.As(err, &already):
		fmt.Fprintf(os.Stderr, "moor-dns serve: already running (pid %d)\n", already.PID)
		return 1
	case err != nil:
		logger.Error("moor-dns serve failed", "err", err)
		fmt.Fprintf(os.Stderr, "moor-dns serve: %v\n", err)
		return 1
	}
	return 0
}

// defaultPaths fills the paths not given with those of the namespace the sidecar runs in,
// as the plugin computes them (server.PathsOf), so that both meet.
func defaultPaths(opts *server.Options) error {
	if opts.StoreDir != "" && (opts.ControlSocket != "" || opts.ControlAddr != "") && opts.PidFile != "" {
		return nil
	}
	paths, _, err := server.PathsOf(os.Getenv(server.RunDirEnv))
	if err != nil {
		return err
	}
	if opts.StoreDir == "" {
		opts.StoreDir = paths.StoreDir
	}
	if opts.ControlSocket == "" && opts.ControlAddr == "" {
		opts.ControlSocket = paths.ControlSocket
	}
	if opts.PidFile == "" {
		opts.PidFile = paths.PidFile
	}
	return nil
}
