// Package plugins is the framework every moor CNI binary is built on. It has no main.
//
// It provides, once for the whole suite:
//
//   - dispatch of the CNI verbs (ADD, DEL, CHECK, VERSION, STATUS, GC) from the environment
//     and stdin given in an Env, so that tests can run a plugin in-process with their own
//     environment, stdin and stdout (see package plugintest) and never swap globals;
//   - one config loader (LoadConf) with defaults before decoding, errors that name the field
//     and value, CNI_ARGS parsing that honours IgnoreUnknown, and the precedence
//     config < args.cni < runtimeConfig for MAC and requested addresses;
//   - typed errors inside and CNI codes only at the edge (ToCNIError, package codes);
//   - an undo stack (Undo) so that a failed ADD rolls back every side effect it made;
//   - netns helpers that never leave a thread in the wrong namespace (they run the work on a
//     locked goroutine through containernetworking/plugins/pkg/ns) and netlink helpers whose
//     dumps retry when the kernel interrupts them (pkg/netlinksafe);
//   - logging with log/slog to a file (default /var/log/moor/<plugin>.log) or stderr; never
//     stdout, which belongs to the CNI result;
//   - named fault points (Fault) that tests enable through MOOR_TEST_FAULT.
//
// What it does not do: it knows nothing of bridges, veths, addresses or firewalls and
// imports no driver; drivers live in their own directories (bridge/, macvlan/, ...), the
// link machinery they share in link/ (veth pairs, the container's interface, bridges,
// masters and shared links), and the other shared pieces (IPAM client, firewall) in
// their own packages. docs/architecture.md has the map.
//
// Thread and netns caveat: every binary must call runtime.LockOSThread in init (Main does it
// for the calling goroutine too) so that main stays on the thread-group leader; code that
// needs to run inside a container's netns must go through WithNetns or a netlink handle
// opened with NetlinkAt, never through ns.Set on the current thread.
package plugins
