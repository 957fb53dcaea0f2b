#!/usr/bin/env bash
# bench-profile.sh BIN REF: where one ADD's time goes, counted rather than timed (the
# counts do not depend on the machine's load). For each plugin chain it makes a private
# host netns, ADDs one container (which creates the network), then ADDs a second under
# `strace -f -c` (syscalls by count) and a third under `strace -f` (netlink sockets by
# protocol, fsync/fdatasync, execve, files opened), and prints a markdown section.
# Then perf_profile (below) splits the CPU of one moor-bridge ADD into its parts, when perf
# is installed. BIN holds moor's binaries, REF the reference plugins. Needs root and strace; touches
# only the netns and temp dir it makes, and removes them.
set -euo pipefail
bin=$1
ref=$2
tmp=$(mktemp -d /tmp/moorprof-XXXXXX)
repo=$(cd "$(dirname "$0")/.." && pwd)
id=$$
hosts=()
cleanup() {
	for h in "${hosts[@]}"; do
		for n in $(ip netns list | awk -v h="$h" '$1 ~ "^" h "c" { print $1 }'); do ip netns del "$n" 2>/dev/null || true; done
		ip netns del "$h" 2>/dev/null || true
	done
	rm -rf "$tmp"
}
trap cleanup EXIT

# chain NAME DIR CONF: CONF is the plugin's config with @DATA@ for its data dir.
profile() {
	local name=$1 dir=$2 conf=$3 h=mprof$id${#hosts[@]}
	hosts+=("$h")
	ip netns add "$h"
	ip -n "$h" link set lo up
	if grep -q '"master"' <<<"$conf"; then # the macvlan parent
		ip -n "$h" link add mprofp0 type veth peer name mprofp1
		ip -n "$h" link set mprofp0 up
	fi
	local data="$tmp/$h"
	mkdir -p "$data"
	sed "s#@DATA@#$data#g" <<<"$conf" >"$data/conf.json"
	local typ
	typ=$(jq -r .type "$data/conf.json")
	add() { # i wrapper...
		local i=$1
		shift
		ip netns add "${h}c$i"
		env CNI_COMMAND=ADD CNI_CONTAINERID="prof$i" CNI_NETNS="/var/run/netns/${h}c$i" CNI_IFNAME=eth0 \
			CNI_PATH="$dir" MOOR_RUN_DIR="$data/run" MOOR_LOG_FILE="$data/moor.log" \
			ip netns exec "$h" "$@" "$dir/$typ" <"$data/conf.json" >"$data/out$i.json"
	}
	mkdir -p "$data/run"
	add 1
	add 2 strace -f -c -o "$data/count.txt"
	add 3 strace -f -e trace=socket,fsync,fdatasync,execve,openat -o "$data/trace.txt"
	local total nl fsyncs execs opens
	total=$(awk '$NF == "total" { print $(NF-2) }' "$data/count.txt")
	nl=$(grep -o 'socket(AF_NETLINK, [^,]*, [A-Z_0-9]*' "$data/trace.txt" | awk '{ print $NF }' | sort | uniq -c |
		awk '{ printf "%s%s %s", sep, $1, $2; sep = ", " }')
	fsyncs=$(grep -cE '(fsync|fdatasync)\(' "$data/trace.txt" || true)
	execs=$(grep -c 'execve(' "$data/trace.txt" || true)
	opens=$(grep -c 'openat(' "$data/trace.txt" || true)
	local top
	top=$(awk 'NR > 2 && $NF != "total" && $1 !~ /^-/ { n = (NF == 6 ? $4 : $4); print $4, $NF }' "$data/count.txt" |
		sort -rn | head -6 | awk '{ printf "%s%s %s", sep, $2, $1; sep = ", " }')
	echo "| $name | $total | ${nl:-none} | $fsyncs | $execs | $opens | $top |"
	for i in 1 2 3; do
		[ -e "/var/run/netns/${h}c$i" ] || continue
		env CNI_COMMAND=DEL CNI_CONTAINERID="prof$i" CNI_NETNS="/var/run/netns/${h}c$i" CNI_IFNAME=eth0 \
			CNI_PATH="$dir" MOOR_RUN_DIR="$data/run" MOOR_LOG_FILE="$data/moor.log" \
			ip netns exec "$h" "$dir/$typ" <"$data/conf.json" >/dev/null 2>&1 || true
	done
}

# perf_profile: where the CPU of one moor-bridge ADD goes. PERF_RUNS ADDs (default 50)
# into a network that exists, each under `perf record` (one sample per 100 µs of CPU, call
# chains through Go's frame pointers), of a moor-bridge built with its symbol table;
# scripts/perfcat assigns every sample to a part of the ADD.
perf_profile() {
	echo
	if ! command -v perf >/dev/null || ! perf record -q -o /dev/null -e task-clock -- true 2>/dev/null; then
		echo "perf is not installed or not usable here: no CPU breakdown of an ADD."
		return
	fi
	local h=mprof$id${#hosts[@]} runs=${PERF_RUNS:-50} period=100000
	hosts+=("$h")
	ip netns add "$h"
	ip -n "$h" link set lo up
	local data="$tmp/$h"
	mkdir -p "$data/run" "$data/bin"
	(cd "$repo" && CGO_ENABLED=0 go build -trimpath -o "$data/bin/moor-bridge" ./bridge)
	sed "s#@DATA@#$data#g" <<<"$moor_bridge" >"$data/conf.json"
	local i
	for i in $(seq 0 "$runs"); do
		ip netns add "${h}c$i"
		local wrap=()
		[ "$i" -gt 0 ] && wrap=(perf record -q -e task-clock -c "$period" -g -o "$data/perf.$i" --)
		env CNI_COMMAND=ADD CNI_CONTAINERID="perf$i" CNI_NETNS="/var/run/netns/${h}c$i" CNI_IFNAME=eth0 \
			CNI_PATH="$data/bin" MOOR_RUN_DIR="$data/run" MOOR_LOG_FILE="$data/moor.log" \
			ip netns exec "$h" "${wrap[@]}" "$data/bin/moor-bridge" <"$data/conf.json" >/dev/null
		[ "$i" -gt 0 ] && perf script -i "$data/perf.$i" -F comm,ip,sym 2>/dev/null >>"$data/script.txt"
	done
	echo "Where the CPU of one moor-bridge + moor-ipam ADD goes (the first row's chain, into a"
	echo "network with containers attached): $runs ADDs, each under \`perf record -e task-clock -c"
	echo "$period -g\` (one sample per 0.1 ms of CPU, with call chains), of a moor-bridge built with"
	echo "its symbol table; scripts/perfcat gives each sample to the first of: the kernel's exec or"
	echo "exit of the process, package initialisers, GOMAXPROCS, the garbage collector; else the"
	echo "part of the ADD nearest the root of its stack (veth, bridge, IPAM, firewall, ...); else"
	echo "JSON, other netlink, the runtime's start. Kernel time spent on the plugin's behalf counts"
	echo "with the part that asked for it. perf's own overhead inflates the total a little."
	echo
	(cd "$repo" && go run ./scripts/perfcat -comm moor-bridge -period "$period" -runs "$runs") <"$data/script.txt"
}

ipam='"ipam":{"type":"@IPAM@","ranges":[[{"subnet":"10.233.0.0/16"}]],"dataDir":"@DATA@/ipam"}'
moor_bridge='{"cniVersion":"1.0.0","name":"moorprof","type":"moor-bridge","bridge":"mprofbr0","isGateway":true,'"${ipam/@IPAM@/moor-ipam}"'}'
ref_bridge='{"cniVersion":"1.0.0","name":"moorprof","type":"bridge","bridge":"mprofbr0","isGateway":true,'"${ipam/@IPAM@/host-local}"'}'
moor_masq='{"cniVersion":"1.0.0","name":"moorprof","type":"moor-bridge","bridge":"mprofbr0","isGateway":true,"isDefaultGateway":true,"ipMasq":true,'"${ipam/@IPAM@/moor-ipam}"'}'

echo "## Where one ADD goes (strace, counted)"
echo
echo "One ADD to a network that exists (a container already attached), in a private host netns;"
echo "\`strace -f -c\` for the syscalls, \`strace -f\` for the rest. Counts, not times: they do not move"
echo "with the machine's load."
echo
echo "| ADD | syscalls | netlink sockets opened (by protocol) | fsync + fdatasync | execve | openat | most frequent syscalls |"
echo "|---|---:|---|---:|---:|---:|---|"
profile "moor-bridge + moor-ipam (in process)" "$bin" "$moor_bridge"
profile "moor-bridge, isolation + ipMasq" "$bin" "$moor_masq"
profile "reference bridge + host-local" "$ref" "$ref_bridge"
moor_macvlan='{"cniVersion":"1.0.0","name":"moorprof","type":"moor-macvlan","master":"mprofp0","mode":"bridge",'"${ipam/@IPAM@/moor-ipam}"'}'
ref_macvlan='{"cniVersion":"1.0.0","name":"moorprof","type":"macvlan","master":"mprofp0","mode":"bridge",'"${ipam/@IPAM@/host-local}"'}'
profile "moor-macvlan + moor-ipam (in process)" "$bin" "$moor_macvlan"
profile "reference macvlan + host-local" "$ref" "$ref_macvlan"

echo
echo "* moor runs its IPAM in the driver's process: one execve per ADD where the reference execs"
echo "  host-local too. Its netlink sockets: one rtnetlink handle in the host and one in the"
echo "  container (NETLINK_ROUTE only) and one netfilter socket that reads the nf_tables ruleset"
echo "  generation: when the network was verified in place at that generation (the record beside"
echo "  the firewall lock, plugins/firewall/nft_gen.go) the ADD reads and writes nothing else in the"
echo "  firewall; after any commit in the netns it takes a second socket for the network's reads"
echo "  and its batch, and records again (the reference execs iptables instead when it masquerades)."
echo "* The two fdatasyncs are moor-ipam's bbolt commit: the new pages, then the meta page that"
echo "  points to them. One sync for both could let a crash leave a meta page on disk that names"
echo "  pages that are not, so an allocation is durable when ADD returns at the cost of two."
echo "* futex and nanosleep counts are inflated by strace itself (a traced system call is slow"
echo "  enough for Go's scheduler to hand the processor to another thread); compare them only"
echo "  within this table."
echo "* Growth with the number of attachments: the ADD no longer walks the host's IPv6 routing"
echo "  table (the host veth is created down and named, then brought up after the container end,"
echo "  so its carrier change is the kernel's link-watch work in the background, as for the"
echo "  floor); the container's interface on an IPv4-only network has IPv6 off before it goes up"
echo "  (no link-local DAD, MLD or router solicitations that the bridge would flood to every port:"
echo "  that softirq work grew by about 2 ms per ADD at 1,000 ports); the host's sysctls are read"
echo "  through one lookup of /proc/sys/net. What still grows is the kernel's own: bridge port add"
echo "  (br_add_if), rtnl lock contention, and the /proc/sys dentry lookups every namespace that"
echo "  opened /proc/sys/net adds to (any per-container sysctl write pays them, the floor's too)."
perf_profile
echo
echo "Start-up of each binary (CNI_COMMAND=VERSION): package initialisers run and what they"
echo "allocate (GODEBUG=inittrace=1), and the binary's size."
echo
echo "| binary | package inits | bytes allocated by inits | size MB |"
echo "|---|---:|---:|---:|"
for b in "$bin/moor-bridge" "$bin/moor-macvlan" "$bin/moor-ipam" "$bin/moor-dns" "$bin/moor-dns-etcd" "$ref/bridge" "$ref/host-local" "$ref/macvlan" "$ref/portmap" "$ref/dnsname"; do
	[ -x "$b" ] || continue
	stats=$(CNI_COMMAND=VERSION GODEBUG=inittrace=1 "$b" </dev/null 2>&1 >/dev/null |
		awk '$1 == "init" { n++; bytes += $8 } END { printf "%d | %d", n, bytes }')
	size=$(awk -v s="$(stat -c %s "$b")" 'BEGIN { printf "%.2f", s / 1e6 }')
	echo "| $(basename "$(dirname "$b")")/$(basename "$b") | $stats | $size |"
done
