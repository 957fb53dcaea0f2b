// Package conflist is moor's CNI config lists: it builds them from the flags of `moor
// network create` (Build), and finds, reads and writes the moor networks of a CNI
// runtime's config directory (Load, Parse, WriteNew).
//
// It is a library, not part of the CLI: moor-netavark (package netavark/translate)
// builds the config lists of podman's moor networks with Build, so that `moor network
// create` and `podman network create -d moor-bridge` write the same plugins.
//
// # Building
//
// Build is pure: the caller passes what is already taken (other moor networks' subnets,
// the host's routes) and writes the result (WriteNew). What it writes, per driver:
//
//	bridge:  moor-bridge {bridge "moor-<10 hex of the ID>" unless --opt bridge=, isGateway,
//	         isDefaultGateway and ipMasq (both off with --internal), internal,
//	         capabilities {portMappings, ips, bandwidth}, ipam {moor-ipam, ranges}} + moor-dns
//	macvlan: moor-macvlan {master, mode, ... from --opt, capabilities {ips, bandwidth}, ipam} (+ moor-dns
//	         with --dns)
//	host:    moor-host {device from --opt}
//	none:    moor-none
//
// Design decisions:
//   - the conflist says "cniVersion": "1.0.0" with "cniVersions": ["1.0.0", "1.1.0"]: libcni
//     1.2 and later (moor, cnitool, CRI-O) pick 1.1.0, which GC and STATUS need, while the
//     libcni 1.1 inside podman 4 and containerd 1.6/1.7 reads 1.0.0 (it fails every ADD of a
//     1.1.0 config with "unsupported CNI result version");
//   - the bridge and macvlan entries declare the "ips" capability besides "portMappings",
//     so that `moor network connect --ip` reaches moor-ipam as runtimeConfig.ips, and
//     "bandwidth", so that a runtime's per-container limits (Kubernetes' bandwidth
//     annotations) reach the driver, which shapes them itself (package link/shaping);
//   - DNS is on by default for bridge networks only (the sidecar listens on the bridge's
//     gateway); --dns turns it on for macvlan; host and none have no addresses to serve
//     and refuse --dns. The moor-dns entry is {"type":"moor-dns","capabilities":{"aliases":true}},
//     with "domain" from --dns-domain, "upstreams" from --dns-upstream (Podman's network
//     --dns) and "internal" for an --internal network (its names are never forwarded out);
//   - at most one --subnet per family: one IPv4 and one IPv6 range set. Without --subnet a
//     /24 is taken from the default pool 10.89.0.0/24 .. 10.255.255.0/24 (Podman's), and
//     with --ipv6 a unique local /64 whose global ID is a hash of the name. A network is
//     IPv6-enabled when it has an IPv6 subnet (--ipv6 without one asks for one);
//   - --gateway and --ip-range belong to the --subnet that contains them. --ip-range
//     becomes rangeStart/rangeEnd, without the subnet's network and IPv4 broadcast address;
//   - a subnet must not overlap another moor network's subnets; for bridge (routed)
//     networks it must not overlap a route of the host's main table either (default routes
//     and IPv6 link-local routes aside). macvlan networks usually share the parent's LAN
//     subnet, so host routes are not held against them.
//
// # Reading and writing
//
// A network is a CNI config list (in a .conflist, .conf or .json file, as runtimes read
// them; single-plugin configs, removed in spec 1.0.0, are not networks here). It is a
// moor network when its first plugin's type starts with "moor-", and its driver is the
// rest of that type (moor-bridge: bridge). Load reads every file of the
// directory in lexicographic order, as runtimes do: when two files name the same network,
// the first one is the network and the later one is reported as a duplicate.
//
// Design decisions:
//   - a network's ID is the SHA-256 of its name in hex (64 digits; 12 when truncated),
//     stable across hosts and re-creations, like a content address; the default bridge of
//     a network created by `moor network create` is "moor-" and the first 10 digits
//     (IFNAMSIZ allows 15 characters);
//   - Docker-style labels live in the list's top-level "moor" object
//     ({"moor": {"labels": {...}}}): libcni ignores unknown top-level keys, and plugin
//     configs stay exactly what the plugins read;
//   - new files are <dir>/60-moor-<name>.conflist: after the "10-" .. "50-" files that
//     runtimes and distributions install, so a runtime that loads only the first list
//     (containerd's default) keeps its default network; rename the file to make a moor
//     network the default;
//   - files are written atomically (a temp file in the same directory, fsynced, renamed
//     over the target) with mode 0644, as runtimes expect to read them.
//
// What it does not do: talk to the kernel or read a store (the CLI's package state
// does), or validate driver fields beyond what it needs to describe a network: the
// plugins do that (doctor runs their STATUS). Build reads and writes no file.
package conflist
