#!/usr/bin/env bash
# Overlay benchmarks (run as root): builds the binaries, then scripts/overlaybench
#   - iperf3 TCP container to container across two lab hosts over moor-overlay, against a
#     hand-built kernel VXLAN and the bare underlay between the same two hosts;
#   - convergence in a 50-host lab: from a new host's lease in etcd to every other host's
#     route (the last of route, neighbour and FDB entry) being in place, and the same for a
#     host leaving.
# Everything runs in lab namespaces; the labs are taken down at the end.
#
# Environment: ROUNDS (throughput rounds, default 3), SECONDS_PER_RUN (iperf3 -t, default 5),
# HOSTS (default 50), JOINS (default 5). Extra arguments go to overlaybench.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
	echo "bench-overlay: needs root (network namespaces)" >&2
	exit 1
fi
for bin in iperf3 etcd ip bridge; do
	command -v "$bin" >/dev/null || { echo "bench-overlay: $bin is missing (apt-get install iperf3 etcd-server iproute2)" >&2; exit 1; }
done
bin_dir="$(mktemp -d /tmp/moor-overlaybench-bin-XXXXXX)"
trap 'rm -rf "$bin_dir"' EXIT
BIN_DIR="$bin_dir" bash scripts/build.sh bench >/dev/null
go run ./scripts/overlaybench -bin-dir "$bin_dir" \
	-rounds "${ROUNDS:-3}" -seconds "${SECONDS_PER_RUN:-5}" -hosts "${HOSTS:-50}" -joins "${JOINS:-5}" "$@"
