// Command benchdns runs moor's DNS server (dns/server) with a generated set of records, for
// scripts/bench-dns.sh. It writes one network and N containers named <prefix>NNNN into a
// fresh Local store, then serves until SIGINT or SIGTERM (or, with -write-only, exits for
// `moor-dns serve` to serve them). It is a benchmark fixture, not a
// product binary: the real entry point is `moor-dns serve`.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/moornet/moor/dns/records"
	"github.com/moornet/moor/dns/server"
)

// addrsPerBlock is how many container addresses go in one /24 of the generated range.
const addrsPerBlock = 250

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "benchdns:", err)
		os.Exit(1)
	}
}

func run() error {
	store := flag.String("store", "", "record store directory (required; emptied of the network first)")
	gateway := flag.String("gateway", "10.99.0.1", "gateway address to listen on")
	subnet := flag.String("subnet", "10.99.0.0/16", "client subnet of the network")
	base := flag.String("base", "10.99.1.0", "first container address block (a /24 per 250 names)")
	names := flag.Int("names", 1000, "number of container names")
	prefix := flag.String("prefix", "hb-ctr-", "container name prefix")
	domain := flag.String("domain", "dns.podman", "search domain")
	port := flag.Int("port", server.DefaultPort, "DNS port")
	control := flag.String("control", "", "control socket (default beside the store)")
	pid := flag.String("pid", "", "pid file (default beside the store)")
	keep := flag.Bool("keep-privileges", false, "do not drop capabilities (needed for cgo builds)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the serving phase to this file")
	writeOnly := flag.Bool("write-only", false, "write the records and exit (for `moor-dns serve --store-dir` to serve them)")
	flag.Parse()
	if *store == "" {
		return fmt.Errorf("-store is required")
	}
	if *control == "" {
		*control = *store + ".sock"
	}
	if *pid == "" {
		*pid = *store + ".pid"
	}
	_, sn, err := net.ParseCIDR(*subnet)
	if err != nil {
		return err
	}
	first := net.ParseIP(*base).To4()
	if first == nil {
		return fmt.Errorf("-base %q is not an IPv4 address", *base)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	st, err := records.NewLocal(*store)
	if err != nil {
		return err
	}
	const network = "bench"
	if err := st.DeleteNetwork(ctx, network); err != nil {
		return err
	}
	n := records.Network{Name: network, Domain: *domain, Gateways: []net.IP{net.ParseIP(*gateway)}, Subnets: []*net.IPNet{sn}}
	if err := st.PutNetwork(ctx, n); err != nil {
		return err
	}
	for i := range *names {
		ip := net.IPv4(first[0], first[1], first[2]+byte(i/addrsPerBlock), byte(i%addrsPerBlock+1))
		name := fmt.Sprintf("%s%04d", *prefix, i)
		r := records.Record{Network: network, ContainerID: fmt.Sprintf("id%04d", i), IfName: "eth0", Names: []string{name}, IPs: []net.IP{ip}}
		if err := st.Put(ctx, r); err != nil {
			return err
		}
	}
	if *writeOnly {
		return nil
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	return server.Run(ctx, server.Options{
		Store:          st,
		Port:           *port,
		Upstreams:      []string{"127.0.0.1:5300"}, // nothing in the benchmark is forwarded
		ControlSocket:  *control,
		PidFile:        *pid,
		IdleTimeout:    -1,
		KeepPrivileges: *keep,
		Logger:         slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
}
