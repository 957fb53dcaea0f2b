#!/usr/bin/env bash
# bench-dns.sh: queries per second, latency and peak memory of moor's DNS sidecar
# (`moor-dns serve`, the binary as shipped) against dnsmasq and aardvark-dns, all serving the
# same container names, for each count in NAMES, on a quiet machine and with a CPU hog
# (a busy loop pinned to the second core, as on a real host), with the method of the perf baseline
# (section 3): the servers listen in turn on a bridge address in one private netns, dnsperf
# runs in another behind a veth, queries are 80 % hits (hb-ctr-NNNN.dns.podman, every name
# asked, in a scattered order) and 20 % misses in the same domain, which every server answers
# itself (NXDOMAIN: dnsmasq has --local for the domain and no upstream, moor is authoritative
# for it). Each round runs every server once per load, in alternating order (moor first in
# odd rounds, last in even ones, so that a drift of the machine's load between two passes
# does not always favour the same server), with a saturating pass (-c 4 -q 100) and a
# latency pass (-c 1 -Q 2000, per-query latencies); each server's CPU time over the
# saturating pass and its peak RSS (VmHWM) after both passes are read from /proc. Prints
# markdown tables of the medians over rounds and a summary against dnsmasq with the median
# and range of the per-round QPS ratios: on a shared machine absolute rates move with
# others' load, the ratio within a round and the CPU time per query much less.
#
# Needs root, iproute2, dnsperf, dnsmasq, aardvark-dns and a Go toolchain. Touches nothing
# outside the two netns it creates (hbdS-*, hbdC-*) and a temp dir, and removes them on exit.
#
# Environment (prefixed DNS_ so that scripts/bench.sh's own ROUNDS does not leak in, and
# a full bench.sh run reproduces these defaults): DNS_ROUNDS (5), DNS_NAMES ("1000 10000"),
# DNS_LOADS ("quiet busy"), DNS_SAT_SECS (8), DNS_LAT_SECS (4), DNS_LAT_QPS (2000),
# DNS_SERVERS ("moor dnsmasq"; add aardvark for aardvark-dns), AARDVARK (path of aardvark-dns).
set -euo pipefail

ROUNDS=${DNS_ROUNDS:-5}
NAMES=${DNS_NAMES:-"1000 10000"}
LOADS=${DNS_LOADS:-"quiet busy"}
SAT_SECS=${DNS_SAT_SECS:-8}
LAT_SECS=${DNS_LAT_SECS:-4}
LAT_QPS=${DNS_LAT_QPS:-2000}
SERVERS=${DNS_SERVERS:-"moor dnsmasq"}
AARDVARK=${AARDVARK:-$(command -v aardvark-dns || echo /usr/lib/podman/aardvark-dns)}
GW=10.99.0.1
CLIENT=10.99.0.100
PREFIX_LEN=16
DOMAIN=dns.podman

repo=$(cd "$(dirname "$0")/.." && pwd)
id=$$-$RANDOM
SNS=hbdS-$id
CNS=hbdC-$id
tmp=$(mktemp -d)
server_pid=""
hog_pid=""

log() { echo "bench-dns: $*" >&2; }

cleanup() {
	stop_hog
	stop_server
	ip netns del "$CNS" 2>/dev/null || true
	ip netns del "$SNS" 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || { log "needs root"; exit 1; }
for tool in dnsperf dnsmasq ip go; do
	command -v "$tool" >/dev/null || { log "missing $tool"; exit 1; }
done
if [[ " $SERVERS " == *" aardvark "* ]] && [ ! -x "$AARDVARK" ]; then
	log "missing aardvark-dns (set AARDVARK)"
	exit 1
fi

# --- topology: servers on a bridge in $SNS, dnsperf in $CNS behind a veth ---
ip netns add "$SNS"
ip netns add "$CNS"
ip -n "$SNS" link set lo up
ip -n "$CNS" link set lo up
ip -n "$SNS" link add br0 type bridge
ip -n "$SNS" addr add "$GW/$PREFIX_LEN" dev br0
ip -n "$SNS" link set br0 up
ip -n "$SNS" link add vc0 type veth peer name eth0 netns "$CNS"
ip -n "$SNS" link set vc0 master br0 up
ip -n "$CNS" addr add "$CLIENT/$PREFIX_LEN" dev eth0
ip -n "$CNS" link set eth0 up

# --- data: the same names for every server ---
addr_of() { echo "10.99.$((1 + $1 / 250)).$(($1 % 250 + 1))"; }
log "building moor-dns (as scripts/build.sh does) and the record writer"
(cd "$repo" && CGO_ENABLED=0 go build -tags moor_noetcd -trimpath -ldflags "-s -w" -o "$tmp/moor-dns" ./dns &&
	CGO_ENABLED=0 go build -o "$tmp/benchdns" ./scripts/benchdns)

make_data() { # names: queries (four hits spread over every name to one miss), aardvark's and dnsmasq's files, moor's store
	local n=$1 lines=$(($1 > 4000 ? $1 * 5 / 4 : 5000))
	awk -v n="$n" -v lines="$lines" -v d="$DOMAIN" 'BEGIN {
		for (i = 0; i < lines; i++) {
			if (i % 5 == 4) printf "hb-miss-%04d.%s A\n", i, d
			else printf "hb-ctr-%04d.%s A\n", (i * 7919) % n, d
		}
	}' >"$tmp/queries.txt"
	mkdir -p "$tmp/aardvark"
	{
		echo "$GW"
		echo "client0000 $CLIENT  hb-client" # aardvark only answers registered clients
		for ((i = 0; i < n; i++)); do
			printf 'id%04d %s  hb-ctr-%04d\n' "$i" "$(addr_of "$i")" "$i"
		done
	} >"$tmp/aardvark/bench"
	for ((i = 0; i < n; i++)); do
		printf '%s hb-ctr-%04d.%s\n' "$(addr_of "$i")" "$i" "$DOMAIN"
	done >"$tmp/hosts"
	rm -rf "$tmp/moor"
	"$tmp/benchdns" -store "$tmp/moor" -gateway "$GW" -subnet "10.99.0.0/$PREFIX_LEN" -names "$n" -domain "$DOMAIN" -write-only
}

# --- servers ---
start_server() {
	case $1 in
	moor)
		ip netns exec "$SNS" "$tmp/moor-dns" serve --store-dir "$tmp/moor" --port 53 \
			--control-socket "$tmp/moor.sock" --pid-file "$tmp/moor.pid" --idle-timeout -1s \
			--netns-check -1s --upstream 127.0.0.1:5300 --keep-privileges --log-file "$tmp/moor-serve.log" 2>"$tmp/moor.log" &
		server_pid=$!
		;;
	aardvark)
		# aardvark-dns daemonises; its pid file names the process to stop.
		rm -f "$tmp/aardvark/aardvark.pid"
		ip netns exec "$SNS" "$AARDVARK" --config "$tmp/aardvark" -p 53 run >"$tmp/aardvark.log" 2>&1 &
		server_pid=$!
		;;
	dnsmasq)
		ip netns exec "$SNS" dnsmasq --keep-in-foreground --no-resolv --no-hosts --no-poll \
			--listen-address="$GW" --bind-interfaces --port=53 --user=root \
			--addn-hosts="$tmp/hosts" --local="/$DOMAIN/" --cache-size=1000 \
			--pid-file="$tmp/dnsmasq.pid" 2>"$tmp/dnsmasq.log" &
		server_pid=$!
		;;
	esac
	local try
	for try in $(seq 100); do
		if echo "hb-ctr-0000.$DOMAIN A" | ip netns exec "$CNS" dnsperf -s "$GW" -n 1 -t 1 2>/dev/null |
			grep -Eq 'Queries completed: +1 '; then
			return 0
		fi
		sleep 0.1
	done
	log "$1 did not answer; its log:"
	cat "$tmp/$1.log" >&2 || true
	return 1
}

stop_server() {
	local pids="$server_pid"
	[ -f "$tmp/aardvark/aardvark.pid" ] && pids="$pids $(cat "$tmp/aardvark/aardvark.pid")"
	rm -f "$tmp/aardvark/aardvark.pid"
	for p in $pids; do
		kill "$p" 2>/dev/null || true
	done
	for p in $pids; do
		while kill -0 "$p" 2>/dev/null; do sleep 0.05; done
	done
	server_pid=""
}

# The CPU hog: a busy loop on the second core (the load generator and the server share
# both cores with it, as on a busy host).
start_hog() {
	taskset -c 1 sh -c 'while :; do :; done' &
	hog_pid=$!
}
stop_hog() {
	if [ -n "$hog_pid" ]; then
		kill "$hog_pid" 2>/dev/null || true
		wait "$hog_pid" 2>/dev/null || true
	fi
	hog_pid=""
}

# --- measurement ---
# cpu_ticks: the server's user and system time so far, in clock ticks (aardvark-dns
# daemonises: its pid file names the serving process).
cpu_ticks() {
	local p=$server_pid
	[ -f "$tmp/aardvark/aardvark.pid" ] && p=$(cat "$tmp/aardvark/aardvark.pid")
	awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo -
}
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print "-"; else print a[int((NR + 1) / 2)] }'; }

measure() { # server round names load -> appends to $tmp/results
	local s=$1 out
	start_server "$s"
	[ "$4" = busy ] && start_hog
	local cpu0 cpu1
	cpu0=$(cpu_ticks)
	out=$(ip netns exec "$CNS" dnsperf -s "$GW" -d "$tmp/queries.txt" -l "$SAT_SECS" -c 4 -q 100 2>/dev/null)
	cpu1=$(cpu_ticks)
	local qps avg lost usq
	qps=$(awk '/Queries per second:/ { print $4 }' <<<"$out")
	usq=$(awk -v a="$cpu0" -v b="$cpu1" -v hz="$(getconf CLK_TCK)" '/Queries completed:/ && $3 > 0 && a != "-" && b != "-" { printf "%.1f", (b - a) * 1e6 / hz / $3 }' <<<"$out")
	avg=$(awk '/Average Latency \(s\):/ { printf "%.3f", $4 * 1000 }' <<<"$out")
	lost=$(awk '/Queries lost:/ { print $3 }' <<<"$out")
	ip netns exec "$CNS" dnsperf -s "$GW" -d "$tmp/queries.txt" -l "$LAT_SECS" -c 1 -Q "$LAT_QPS" -v 2>/dev/null |
		awk '/^> / { print $NF * 1000 }' | sort -g >"$tmp/lat"
	local n p50 p90 p99 max
	n=$(wc -l <"$tmp/lat")
	pct() { awk -v n="$n" -v p="$1" 'NR == (int(n * p / 100) > 0 ? int(n * p / 100) : 1) { printf "%.3f", $1; exit }' "$tmp/lat"; }
	p50=$(pct 50)
	p90=$(pct 90)
	p99=$(pct 99)
	max=$(tail -n 1 "$tmp/lat" | awk '{ printf "%.1f", $1 }')
	local rss
	rss=$(awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$server_pid/status" 2>/dev/null || echo -)
	stop_hog
	stop_server
	echo "$3 $4 $s $qps $avg $lost $p50 $p90 $p99 $max ${rss:--} ${usq:--} $2" >>"$tmp/results"
	log "$3 names, $4, round $2 $s: $qps qps, ${usq:--} us CPU/query, avg $avg ms, lost $lost, p50 $p50 p99 $p99 ms, peak RSS ${rss:--} MiB"
}

for n in $NAMES; do
	make_data "$n"
	for ((r = 1; r <= ROUNDS; r++)); do
		order=$SERVERS
		((r % 2 == 0)) && order=$(tr ' ' '\n' <<<"$SERVERS" | tac | tr '\n' ' ')
		for load in $LOADS; do
			for s in $order; do
				measure "$s" "$r" "$n" "$load"
				sleep 1 # settle
			done
		done
	done
done

col() { awk -v n="$1" -v l="$2" -v s="$3" -v c="$4" '$1 == n && $2 == l && $3 == s { print $c }' "$tmp/results" | median; }
colmax() { awk -v n="$1" -v l="$2" -v s="$3" -v c="$4" '$1 == n && $2 == l && $3 == s && $c != "-" { if ($c > m) m = $c } END { print (m == "" ? "-" : m) }' "$tmp/results"; }
# ratios names load: moor's QPS over dnsmasq's in each round, one a line.
ratios() {
	awk -v n="$1" -v l="$2" '$1 == n && $2 == l && $3 == "moor" { m[$13] = $4 } $1 == n && $2 == l && $3 == "dnsmasq" { d[$13] = $4 }
		END { for (r in m) if (d[r] > 0) printf "%.2f\n", m[r] / d[r] }' "$tmp/results" | sort -g
}
echo
echo "DNS: moor-dns serve (as shipped) against dnsmasq$([[ " $SERVERS " == *" aardvark "* ]] && echo " and aardvark-dns"), $ROUNDS rounds (medians), servers in alternating order;"
echo "saturation: dnsperf -c 4 -q 100 for ${SAT_SECS}s; latency: -c 1 -Q $LAT_QPS for ${LAT_SECS}s; busy: a CPU hog on the second core."
echo "CPU is the server's user and system time over the saturating pass per query answered; peak RSS is its VmHWM after both passes."
for n in $NAMES; do
	for load in $LOADS; do
		echo
		echo "$n names, $load:"
		echo
		echo "| server | QPS at saturation | vs dnsmasq | CPU µs/query | avg ms at saturation | lost | p50 ms at $LAT_QPS qps | p90 | p99 | max | peak RSS MiB |"
		echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
		base=$(col "$n" "$load" dnsmasq 4)
		for s in $SERVERS; do
			qps=$(col "$n" "$load" "$s" 4)
			ratio=$(awk -v a="$qps" -v b="$base" 'BEGIN { if (b > 0 && a != "-") printf "%.2f", a / b; else print "-" }')
			printf '| %s | %.0f | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$s" "$qps" "$ratio" "$(col "$n" "$load" "$s" 12)" \
				"$(col "$n" "$load" "$s" 5)" "$(col "$n" "$load" "$s" 6)" "$(col "$n" "$load" "$s" 7)" \
				"$(col "$n" "$load" "$s" 8)" "$(col "$n" "$load" "$s" 9)" "$(col "$n" "$load" "$s" 10)" "$(col "$n" "$load" "$s" 11)"
		done
	done
done
echo
echo "Summary, moor against dnsmasq (goals: QPS ratio at least 1.00, p99 at $LAT_QPS qps no higher, moor's RSS under 20 MiB)."
echo "The QPS ratio is taken within each round (the two servers measured seconds apart), median and range over rounds:"
echo
echo "| names | load | QPS moor / dnsmasq, median (range) | CPU µs/query moor / dnsmasq | p99 ms moor / dnsmasq | moor peak RSS MiB, median (max) |"
echo "|---:|---|---:|---|---|---:|"
for n in $NAMES; do
	for load in $LOADS; do
		rs=$(ratios "$n" "$load")
		ratio=$(median <<<"$rs")
		range=$(awk 'NR == 1 { lo = $1 } { hi = $1 } END { if (NR) printf "%s-%s", lo, hi; else print "-" }' <<<"$rs")
		echo "| $n | $load | $ratio ($range) | $(col "$n" "$load" moor 12) / $(col "$n" "$load" dnsmasq 12) | $(col "$n" "$load" moor 9) / $(col "$n" "$load" dnsmasq 9) | $(col "$n" "$load" moor 11) ($(colmax "$n" "$load" moor 11)) |"
	done
done
