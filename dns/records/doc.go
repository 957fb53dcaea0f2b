// Package records is the DNS sidecar's record store: which networks exist (their gateways,
// subnets, search domain, upstream override) and which names and addresses each container
// attachment registered on them.
//
// The plugin (moor-dns ADD/DEL/GC) writes through a Store; the server (dns/server) reads it
// and rebuilds its in-memory index whenever the store signals a change. One interface has two
// backends: Local (files under a directory, for networks of one host; this package) and, later,
// etcd (for overlay networks, so a name registered on one host resolves on every host). The
// Store interface is shaped so that a watch-based backend fits: Watch delivers coalesced
// Change values naming the networks that changed, or All when the backend lost track (an etcd
// compaction, a reconnect) and the reader must re-read everything.
//
// What it does not do: it does not serve DNS, does not start the server and does not decide
// which names a container gets (the plugin does). It does not reclaim records of containers
// that are gone without a DEL; the plugin's GC does that with Delete.
//
// Design decisions, and why:
//   - Names are validated on every write and on every read (RFC 1123 labels, dot-separated,
//     each label 1-63 characters of letters, digits and inner hyphens, at most 253 in all).
//     Underscores are accepted inside labels, a deliberate departure from strict RFC 1123
//     hostnames: runtimes generate container names such as podman's "sharp_newton", DNS
//     itself carries any byte in a label, and resolvers (glibc, musl) send such names.
//     Spaces, dots at the edges and every other character are refused. Names are lowercased and
//     de-duplicated, and so are addresses, so the same A record is never served twice.
//   - A bad name is an *InvalidNameError whose CNICode is InvalidNetworkConfig (7).
//   - A record holds at most MaxNamesPerRecord (128) names, refused on write and read; the
//     plugin also keeps a network to MaxNamesPerNetwork (65,536) names. They bound the
//     server's memory: names are the only part of a record a runtime's user chooses in bulk.
//   - Local layout: <root>/<network>/network.json and <root>/<network>/<containerID>.<ifname>.json,
//     written atomically (temp file, fsync, rename). The root is 0700 until GrantRead
//     opens it to the DNS server's group: then the root and network directories are 2750
//     (setgid, so that what is created inside inherits the group) and files 0640, readable
//     by that group and root only, never by others; the server, which switches to an
//     unprivileged uid, reads them through that group. Network directories and files are
//     created 2750 and 0640 from the start, so a store opened once stays open to the
//     group with no further step. Writers
//     of one network serialise on an flock of the network's directory; readers take no lock
//     (a rename is atomic, so they see the old or the new file, never half of one).
//   - Put needs the network to exist (PutNetwork first); otherwise *NotFoundError. A record file
//     whose name collides with another attachment's (container "a.b" + "c" against "a" + "b.c")
//     is refused with *ConflictError instead of being overwritten.
//   - List returns every readable record and, joined in its error, one *CorruptError per file
//     it could not parse or validate, so one damaged file never hides the others.
//   - The Local backend's Watch sees only writes made through the same *Local value (the same
//     process). Writers in other processes tell the server through its control socket
//     (server.Reload re-reads the store, server.ReloadRecord one record or network).
//   - Local keeps beside each network's records a names counter (.names, see count.go):
//     NamesHeld reads it and lists the directory instead of reading every record, so an
//     ADD's name bound costs the same at a thousand containers as at one; Get reads one
//     record.
package records
