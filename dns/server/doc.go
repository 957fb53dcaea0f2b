// Package server is moor's DNS sidecar: one process per host network namespace that answers, on each
// network's gateway addresses only, A, AAAA and PTR queries for the containers registered in
// the record store (dns/records), forwards other names to the host's resolvers, and refuses
// clients from outside the networks. The moor-dns plugin starts it (Run) and talks to it
// through Reload, Healthy and WaitAnswer; it does not write records (the plugin does, through
// records.Store) and it does not create bridges or addresses.
//
// # Design notes
//
// Index. Queries read an immutable snapshot through an atomic pointer: per network a map
// from every lowercase FQDN a client may ask to its addresses, and a map from reverse names
// to primary names, each cut into shards by a hash of the key (shardMap) so that a change
// of one record copies a few shards and shares the rest. A lookup is a hash and a map read
// whatever the number of names, and nothing is allocated in proportion to it. The index is built compactly, memory being what bounds a
// sidecar with many names: the forms of a name share one entry and one key string, addresses
// are arrays carved from one slice per network, and a reload never copies the records it
// read (10,000 names: about 2 MB of index, a peak RSS of 16-18 MiB). A store change
// re-indexes only the networks it names (records.Change) and shares the others; POST /reload re-reads everything (the plugin runs in
// another process, so the Local store's in-process watch cannot see its writes); the
// plugin's ADD and DEL name their record (?network=&container=&ifname=), and the server then
// reads that record alone and adds it to a copy of its network's view, or removes what it
// had added when it is gone, or re-reads that network where the copy could differ from a
// rebuild (see withRecord and withoutRecord): an ADD or DEL costs the same on a network of
// a thousand containers as on an empty one. Sockets are
// never rebound on record changes: only a gateway address that appears gains listeners, and
// one no network uses any more loses them. Listeners set IP_FREEBIND so a gateway can be bound
// before its bridge has the address; the wildcard address is never bound.
//
// Names. A record's names answer as "name.", "name.<network>." (when the network name is a
// valid DNS label) and "name.<domain>."; the domain defaults to DefaultDomain ("dns.moor",
// after Podman's "dns.podman"), the same for every network so that a search list works on any
// of them; scoping keeps networks apart. Several records under one name: all their addresses,
// shuffled per answer. PTR answers the first name of the first record (by container ID) that
// holds the address, qualified with the domain. An unknown name inside a domain gets NXDOMAIN
// with a synthesised SOA and is never forwarded; a miss of the "name.<network>." or single-label
// form is forwarded, as Docker does; a known name without the asked type gets NODATA. An unknown reverse name of an address inside the client's subnets gets NXDOMAIN
// (private addresses are not asked upstream). Local answers carry Options.TTL (default 5 s).
//
// Scoping. Each listening socket knows the gateway address it is bound to; a query sees the
// networks that have that gateway and a subnet holding the source address. Nobody else gets
// an answer: REFUSED. A UDP query must also have arrived on the interface holding the
// gateway address, or on loopback (the host itself): one routed in from another network or
// from outside carries a source address its sender chose, and is dropped (see ingress).
// TCP is not checked: a spoofed source cannot complete the handshake.
//
// Chain. Stages in the CoreDNS shape (Handler: Name and ServeDNS returning rcode and error),
// in one runtime-visible order, DefaultChain: metrics (counts and times everything), guard
// (FORMERR for several questions, NOTIMP for other opcodes, REFUSED for other classes and for
// ANY, AXFR and IXFR: no amplification), acl (scoping), local (the records), cache (forwarded
// answers only, bounded, TTL-respecting, negative answers by SOA minimum) and forward. A stage
// that writes nothing returns SERVFAIL, REFUSED, FORMERR or NOTIMP and the server writes that
// rcode; NextOrFailure gives SERVFAIL at the end of the chain.
//
// Forwarding. Upstreams come from Options.Upstreams, else from /etc/resolv.conf; when that
// lists only loopback stubs (systemd-resolved's 127.0.0.53) the real servers of
// /run/systemd/resolve/resolv.conf are used if that file exists, else the stub is asked (the
// server runs in the host netns, so loopback works). A network's own Upstreams override the
// host's. At most 3 upstreams are tried in order, each for Options.ForwardTimeout (400 ms), so
// a dead first server costs well under a client's usual 1-5 s timeout; SERVFAIL and REFUSED
// from one upstream also move on to the next. Over UDP a forward runs in a goroutine of its
// own, so the socket's readers keep answering local names at once, whatever the upstreams
// do; over TCP it runs on the connection's goroutine, which only that client waits on.
// Forwards in flight are bounded per client address (Options.MaxForwardsPerClient, 32), per
// network (MaxForwardsPerNetwork, 256) and in all (MaxForwards, 1024); past a bound a query
// gets SERVFAIL at once rather than a place in a queue, so that one container cannot make
// others wait. Clients whose networks are all internal are
// never forwarded: they get REFUSED (not NXDOMAIN, which would be a lie a resolver caches).
// The server's own addresses are never used as upstreams.
//
// TCP. Connections are bounded per client address (Options.MaxTCPConnsPerClient, 16) and in
// all (MaxTCPConns, 512), each being a descriptor; one past a bound is reset as soon as it
// is accepted. A connection that sends nothing for Options.TCPIdleTimeout (3 s) is closed.
//
// Names. The index keeps at most records.MaxNamesPerNetwork names per network (the plugin
// refuses ADDs past it; a store filled otherwise has its extra records left out and
// logged). Nothing of a deleted network or record stays referenced by a later snapshot
// but the slices its view's entries were carved from, which hold the live ones too; once the index shrinks to half its peak the server forces a collection and
// returns the freed memory to the system (debug.FreeOSMemory), which the Go runtime would
// otherwise do only over minutes.
//
// UDP. Each socket has one reader goroutine per two CPUs, which reads up to 16 datagrams
// with one recvmmsg and sends their answers with one sendmmsg, from buffers allocated once.
// The common query (one A or AAAA question, no EDNS options) is answered straight from the
// datagram's bytes by the fast path (fast.go), which gives the chain's answer without
// unpacking or allocating anything, and counts it in the metrics; every other datagram is
// unpacked and goes through the chain. So a busy server spends its time in the kernel, and
// the collector, having nothing to collect, adds no pauses to the answers' latency.
//
// Size. UDP answers fit the client's EDNS size (at most 1232) or 512 bytes, with the TC bit
// set when records were cut; TCP answers up to 64 KiB.
//
// Lifecycle. Run locks a pid file (one instance), makes the control socket (a 0600 unix
// socket or a loopback TCP address), drops its privileges (below), reads the store, binds,
// then lets the control API answer (GET /healthz, GET /metrics in the Prometheus text
// format, POST /reload): a server that answers has dropped its privileges and serves the
// store. It returns when its context ends or no record has existed for
// Options.IdleTimeout (30 s). A restarted server serves what the store holds.
//
// Privileges. After binding, the server switches to an unprivileged uid and gid
// (Options.UID/GID, DefaultUID/DefaultGID 61053: a dedicated pair no account uses) and
// keeps CAP_NET_BIND_SERVICE alone (plus what the firewall repair needs, below), to bind
// port 53 on gateways of networks created later;
// it sets no_new_privs and loads a seccomp deny list (seccomp_linux.go says why a deny list).
// It needs a CGO_ENABLED=0 binary (see DropPrivileges). It must still read the records
// that the plugin, as root, writes. Three ways were weighed: keeping CAP_DAC_READ_SEARCH
// (it would read every file of the host, /etc/shadow included: what the switch is meant to
// take away), having the plugin hand every record over the control socket (a second write
// path beside the store, and nothing for the etcd store or for a restart), and opening the
// records to the server's group. The last is what is done: before the switch the server
// gives its group read access to the Local store (records.GrantRead: directories 2750 with
// the setgid bit, so that what the plugin creates later inherits the group, files 0640;
// others get nothing) and makes the store its working directory, reading it by relative
// paths, so the directories above it (/run/moor, 0700) stay closed. It cannot write the
// records. The control socket and pid file are opened before the switch and stay root's,
// so the server cannot remove them when it stops: a socket nobody accepts on is replaced by
// the next server, as after a SIGKILL. No query is answered before the switch: the gateways
// are bound after it, with the capability kept.
//
// Firewall repair. With Options.FirewallRepair (moor-dns serve's default) the server also
// runs the firewall Repairer of its namespace (plugins/firewall): moor's rules come back
// by themselves after a firewall reload (`nft flush ruleset`, `iptables -F`, a firewalld
// reload). It lives here because the sidecar is the one host-level process moor already
// runs per host namespace; a separate daemon would be one more process to start, find and
// stop. The cost is privilege, and it was weighed: the repair writes the firewall, so
// the server keeps CAP_NET_ADMIN beside CAP_NET_BIND_SERVICE (nftables goes through
// netlink, no program is run and the seccomp deny list stays whole); where the
// namespace's networks use iptables it also keeps CAP_NET_RAW, raises both as ambient and
// leaves execve out of the deny list, because iptables is a program (FirewallRetain). The
// uid stays unprivileged, no_new_privs stays set, no file of the host becomes readable:
// still far less than aardvark-dns, which runs as full root. Everything the repair opens
// by path (the State directory, opened to the server's group like the records; the
// firewall lock file; the netlink event socket) is opened before the drop. A host that
// wants the sidecar at CAP_NET_BIND_SERVICE alone turns the repair off (firewallRepair:
// false in the plugin config, --firewall-repair=false); its rules are then not repaired.
// The backend is read from the State when the server starts: a namespace whose networks
// move to iptables later (its first bridge network comes after a macvlan one, or its
// nftables networks were removed) has a server with nftables' privileges, which cannot
// raise them again. Its repair then fails (reported in /healthz and by `moor doctor`)
// and /healthz says firewallRestart, so that the plugin's next ADD stops it and starts
// one with the iptables backend's privileges (dns/sidecar.go). The State covers
// every moor bridge network of the namespace, with or without DNS, so a network without
// DNS is repaired whenever a sidecar runs in its namespace; with none, nothing repairs
// it. /healthz reports the Repairer's counters (firewallRepair).
//
// Namespaces. A server belongs to the network namespace it runs in: GET /healthz reports the
// namespace's identity (plugins/netnsid) and its pid, and Sidecar, the client the plugin
// uses, treats a server of another namespace as a *ForeignError, never as its own. PathsFor
// keys the default paths by namespace (the machine's own keeps /run/moor/dns.sock, dns.pid
// and dns/), so that two namespaces with networks of the same name never share records.
// Every Options.NetnsCheck (5 s), and on every GET /healthz, the server checks whether
// anything but itself still keeps its namespace alive (netnsid.InUse); once nothing does, the
// namespace was deleted: the server reports itself orphaned and stops after its idle timeout
// whatever records are left. (Those stay: the server may not write its store. The kernel
// may give a later namespace the same identity, and with it the same directory; the
// plugin's ADD empties a store written by another life of its identity, see the marker in
// package main of moor-dns.)
package server
