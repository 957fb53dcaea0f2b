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
#
# VM=1 runs the encrypted overlay's measurements in the VM lane's guest instead (Debian's
# stock kernel, which has WireGuard; scripts/vmtest.sh with MOOR_VMTEST_EXEC): TCP
# throughput container to container over a WireGuard network vs a clear VXLAN network vs
# the bare underlay in one lab (-planes), then key rotation in a ROTATE_HOSTS-host
# encrypted lab (default 20), ROTATIONS rotations (default 5). The guest's CPU is
# emulated (qemu TCG): only ratios between the modes of one run mean anything.
# MOOR_VMTEST_CPU picks qemu's CPU model (default max), which decides the vector code the
# guest kernel's ChaCha20-Poly1305 runs, and so how much emulation costs WireGuard.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
	echo "bench-overlay: needs root (network namespaces)" >&2
	exit 1
fi
for bin in iperf3 etcd ip bridge; do
	command -v "$bin" >/dev/null || { echo "bench-overlay: $bin is missing (apt-get install iperf3 etcd-server iproute2)" >&2; exit 1; }
done
if [ "${VM:-0}" = 1 ]; then
	# Markdown on stdout (bench.sh puts it into docs/benchmarks.md): what ran where, then
	# overlaybench's output without the labs' progress lines; the guest's console on stderr.
	vmlog=$(mktemp /tmp/moor-overlaybench-vm-XXXXXX)
	trap 'rm -f "$vmlog"' EXIT
	cmd="./scripts/overlaybench -planes -no-convergence -rounds ${ROUNDS:-5} -seconds ${SECONDS_PER_RUN:-5} -rotate-hosts ${ROTATE_HOSTS:-20} -rotations ${ROTATIONS:-5} $*"
	started=$(date -u '+%Y-%m-%d %H:%M UTC') load_before=$(cut -d' ' -f1-3 /proc/loadavg)
	rc=0
	MOOR_VMTEST_TIMEOUT=${MOOR_VMTEST_TIMEOUT:-3600} MOOR_VMTEST_EXEC="$cmd" bash scripts/vmtest.sh >"$vmlog" 2>&1 || rc=$?
	cat "$vmlog" >&2
	summary=$(grep '^vmtest: .* tests ran in the guest' "$vmlog" || echo "vmtest: the guest did not report")
	echo "$started, commit $(git rev-parse --short HEAD), \`$cmd\` in the VM lane's guest:"
	echo "qemu TCG (\`-cpu ${MOOR_VMTEST_CPU:-max}\`, 2 vCPUs, 2 GiB) on this machine (load before: $load_before;"
	echo "after: $(cut -d' ' -f1-3 /proc/loadavg)); ${summary#vmtest: }."
	host_cipher=$(openssl speed -seconds 2 -bytes 1420 -evp chacha20-poly1305 2>/dev/null | awk '$1 == "ChaCha20-Poly1305" {sub(/k$/, "", $2); printf "%.0f Mbit/s", $2 * 8 / 1000}')
	echo "The same cipher measurement on this machine itself (not emulated): ${host_cipher:-openssl speed failed}."
	echo
	echo '```text'
	sed -n '/^== output of/,$p' "$vmlog" | sed '1d' | grep -v '^lab mbench' | grep -v '^vmtest: ' | grep -v '^\[ *[0-9.]*\]'
	echo '```'
	exit "$rc"
fi
bin_dir="$(mktemp -d /tmp/moor-overlaybench-bin-XXXXXX)"
trap 'rm -rf "$bin_dir"' EXIT
BIN_DIR="$bin_dir" bash scripts/build.sh bench >/dev/null
go run ./scripts/overlaybench -bin-dir "$bin_dir" \
	-rounds "${ROUNDS:-3}" -seconds "${SECONDS_PER_RUN:-5}" -hosts "${HOSTS:-50}" -joins "${JOINS:-5}" "$@"
