// Package runtimes proves moor under real container runtimes, configured as
// docs/runtimes.md tells users to: podman 4.3 with its CNI backend, containerd 1.6's CRI
// driven by crictl, `ctr run --cni`, and cnitool; and it checks the Kubernetes example of
// deploy/kubernetes/ (YAML, the conflist it installs, and that conflist at work).
//
// Its tests (scenarios) build moor's binaries and install them with scripts/install.sh
// --loopback into a temp CNI bin dir, build a busybox image and a pause image on the
// machine (no registry: BusyboxRootfs, PauseRootfs, TarDir, WriteOCIArchive), and run the
// runtimes with every state path of theirs in temp dirs: podman through CONTAINERS_CONF
// and CONTAINERS_STORAGE_CONF, containerd as the tests' own process (own root, state,
// socket, config; stopped by PID after the last test, its shims too).
//
// The runtimes work in the machine's own network namespace, so the scenarios do too. They
// use only names and addresses they own (bridges and networks "mrt<hex>", subnets
// 10.230.<n>.0/24 that no host route overlaps, netns "moorrt-<hex>"), snapshot the host
// before each scenario (links, addresses, routes, rules, the nftables and iptables
// rulesets, forwarding sysctls, runtime netns) and fail when anything differs afterwards,
// once the scenario's network is removed (its firewall rules through the firewall
// package's RemoveNetwork, its bridge, its DNS sidecar by PID) and the sysctls moor turned
// on are put back. Packages that do the same must not run at the same time: they all hold
// HostLockPath (LockHost) for their whole run. A few directories the runtimes create
// whatever they are told (containerd's shim socket dir, runc's and podman's caches,
// libcni's result cache) are removed at the end when they did not exist before.
//
// Design decisions, each with its reason: podman's containers get the gateway as DNS
// server with --dns and --dns-search (podman writes it into resolv.conf only for a
// `dnsname` plugin); the conflists say cniVersion 1.0.0 (the newest libcni 1.1 knows, which
// podman 4.3 and containerd 1.6 embed) and cniVersions ["1.0.0", "1.1.0"], so cnitool (libcni
// 1.3) uses 1.1.0, GC and STATUS included; podman's containers get the host's hard limits
// as ulimits (root here lacks CAP_SYS_RESOURCE); crictl is v1.34 (CRI v1, which
// containerd 1.6 serves; the module proxy does not serve the v1.26 line).
//
// A scenario whose runtime is not installed is skipped, naming scripts/runtime-deps.sh;
// one whose runtime cannot start here is skipped with the runtime's own error, after the
// attempt. Without root only the tests that need no runtime run.
//
// Podman 5 (netavark, no CNI backend) is TestPodman5, the podman 5 lane: podman 5.4 and
// netavark 1.14 run in a Debian 13 root file system (scripts/podman5-root.sh, cached per
// machine; $MOOR_PODMAN5_ROOT names it, $MOOR_PODMAN5_SKIP says why it is missing) with
// moor-netavark as netavark's external plugin, and netavark's own bridge beside it; see
// podman5_env_test.go for how podman runs there. The lane is skipped, naming the cause,
// when the root cannot be made (no route to the archive).
//
// Not covered here: CRI-O, and the DaemonSet running in a real cluster.
package runtimes
