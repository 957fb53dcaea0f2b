#!/usr/bin/env bash
# The demo: builds moor, creates a bridge network with DNS, attaches two "containers"
# (network namespaces), shows them reaching each other by name and what `moor network ls`
# and `moor network inspect` say, then removes everything it made.
#
# It never touches the machine's own network: a namespace "moor-demo-host-<pid>" plays the
# host (bridge, firewall rules and the DNS sidecar live there), the containers are
# namespaces attached to it, and every config and state file sits in a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

say "installing what the demo needs and building moor"
bash scripts/deps.sh
bash scripts/build.sh

work=$(mktemp -d /tmp/moor-demo.XXXXXX)
host="moor-demo-host-$$"
web="moor-demo-web-$$"
db="moor-demo-db-$$"
export MOOR_RUN_DIR="$work/run" # the DNS sidecar of this demo host keeps its files here
export MOOR_LOG_FILE="$work/moor.log"

cleanup() {
	set +e
	if [ -f "$MOOR_RUN_DIR/dns.pid" ]; then
		pid=$(cat "$MOOR_RUN_DIR/dns.pid")
		[ -n "$pid" ] && kill "$pid" 2>/dev/null
	fi
	for ns in "$web" "$db" "$host"; do ip netns del "$ns" 2>/dev/null; done
	rm -rf "/etc/netns/$web" "/etc/netns/$db" "$work"
}
trap cleanup EXIT

bash scripts/install.sh --from bin --bin-dir "$work/cni-bin" --cli-dir "$work/cli" >/dev/null
ip netns add "$host"
ip -n "$host" link set lo up

moor() {
	ip netns exec "$host" "$work/cli/moor" --conf-dir "$work/net.d" --cni-path "$work/cni-bin" --cache-dir "$work/cache" "$@"
}

say "create a bridge network with DNS"
run moor network create demo --subnet 10.99.0.0/24 --ipam-opt dataDir="$work/ipam"

say "attach two containers, named web and db"
ip netns add "$web"
ip netns add "$db"
run moor network connect demo "$web" --name web --alias www
run moor network connect demo "$db" --name db

say "the containers reach each other by name"
for ns in "$web" "$db"; do
	mkdir -p "/etc/netns/$ns"
	printf 'nameserver 10.99.0.1\nsearch dns.moor\n' >"/etc/netns/$ns/resolv.conf"
done
run ip netns exec "$web" busybox nslookup db 10.99.0.1
run ip netns exec "$web" busybox ping -c 2 db.dns.moor
run ip netns exec "$db" busybox ping -c 2 www

say "what moor shows"
run moor network ls
run moor network inspect demo

say "clean up"
run moor network disconnect demo "$web"
run moor network disconnect demo "$db"
run moor network rm demo
run moor network ls
echo
echo "demo done: everything it made is removed on exit"
