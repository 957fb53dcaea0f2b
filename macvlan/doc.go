// Command moor-macvlan is Docker's macvlan driver as a CNI plugin: each container gets a
// macvlan sub-interface of a parent ("master") link, with its own MAC, in mode bridge,
// private, vepa or passthru. It accepts every field of the reference macvlan plugin with
// the same meaning (master, mode, mtu, ipam, linkInContainer, mac, bcqueuelen; the MAC also
// from runtimeConfig.mac, args.cni.mac and CNI_ARGS MAC=, config mac lowest), so a
// reference conflist moves to moor by changing its type.
//
// Beyond the reference:
//
//   - master "<link>.<vlan id>" (Docker's parent=eth0.10) creates the 802.1q
//     sub-interface when it does not exist, marked with the alias "moor-vlan", and deletes
//     it with its last user. A sub-interface without that alias (made by the admin) is used
//     as it is and never deleted. A kernel without 8021q support refuses with code 104.
//   - hostShim: true gives the host one bridge-mode macvlan of its own on the master,
//     mvs-<hash of the network name> (alias "moor-shim:<network>"), holding an address of
//     the network reserved in IPAM under the key moor-shim-<network>/shim, plus a host
//     route to each container address via the shim. The host then reaches the containers
//     (which the kernel otherwise forbids between a master and its macvlans) and the
//     containers reach the host at the shim's address. The shim is removed, and its
//     address released, with the network's last attachment.
//   - GC and STATUS (the reference has neither).
//
// Design notes.
//
// ADD, registering the undo of each step right after it: resolve and check the master
// (exists or is a <link>.<id> to create, is up, is Ethernet, MTU at least the config's:
// code 7 naming it otherwise); moor-ipam's reservation; the VLAN sub-interface; the
// macvlan, created from the host straight into the container's netns under CNI_IFNAME
// (the master's netns with linkInContainer); any other IPAM type (after the link, as in
// the reference, because the dhcp IPAM needs the link); the host shim; then addresses
// (IPv6 with IFA_F_NODAD), arp_notify and ndisc_notify (the LAN learns a reused address's
// new MAC at link up), link up, and IPAM's routes (a route without gw goes via its
// family's gateway). moor-ipam needs nothing of the link, so it reserves first, and its
// store commit (two fdatasyncs, mostly a wait for the disk) runs in a goroutine beside
// all of the link work until it is joined after the routes, before
// macvlan/after-addresses (ipamclient.ReserveDurableLater): nothing is reported before
// the reservation is durable. A failing link step still reports its own error when the
// reservation failed too, the reference's order. Fault points for tests:
// macvlan/after-link, macvlan/after-ipam, macvlan/after-shim, macvlan/after-addresses,
// and macvlan/del-after-link in DEL.
//
// The link machinery lives in library packages an ipvlan driver would share: the master
// and its 802.1q sub-interface in link/master, the host shim in link/shim, both counted
// and deleted with their last user by link/sharedlink (under file locks in lockDir,
// default /run/moor/macvlan), and the container interface's addresses and routes in
// link/containerif. This package keeps what is macvlan's own: the config, the macvlan
// link, and the verbs.
//
// DEL deletes CNI_IFNAME in the container only when it is a macvlan (an interface of
// another kind by that name is not moor's), succeeds when the netns or link is gone, and
// always releases the addresses. CHECK names each difference with code 110.
//
// DNS (with moor-dns, later): the sidecar serves a macvlan network on the shim's address
// when the network has a host shim, otherwise on the IPAM gateway when that address is
// local to the host; without either, containers cannot reach a DNS server on the host.
package main
