#!/usr/bin/env bash
# Runs moor's benchmark suite and rewrites docs/benchmarks.md (and the plot
# docs/bench-add-latency.svg) with the results: moor's plugins against Debian's reference
# CNI plugins and against the in-process netlink floor (scripts/cnibench), plus the DNS
# benchmark of scripts/bench-dns.sh when it exists. Installs what it needs; run as root.
# A full run takes about 10-15 minutes on an idle 2-core machine (20 when other work
# loads it), plus the DNS benchmark.
#
# Environment:
#   ROUNDS=n         rounds for N < 200, macvlan, ipam and memory (default 3)
#   LARGE_ROUNDS=n   rounds for cni-latency at N >= 200 (default 1)
#   GROWTH_ROUNDS=n  rounds of the 1000-ADD growth run (default 1)
#   QUICK=1          tiny sizes, a smoke run of about a minute; writes to a temp dir, not docs/
#   OUT=file         where the markdown goes (default docs/benchmarks.md; QUICK: a temp file)
#   DNS_ROUNDS=n ... the DNS benchmark's own knobs (scripts/bench-dns.sh; 5 rounds by default,
#                    so that its ratios hold on a shared machine; ROUNDS does not reach it)
# Extra arguments go to cnibench (see `go run ./scripts/cnibench -h`), e.g.
#   scripts/bench.sh -scenarios cni-latency -n 50 -workers 1
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
	echo "bench: needs root (network namespaces)" >&2
	exit 1
fi

# scripts/deps.sh installs the Debian packages the benchmarks drive (the reference
# plugins, etcd for moor-ipam's etcd store, the firewall tools the reference plugins
# exec) and loads the kernel modules.
bash scripts/deps.sh
# Nor are GNU time (peak RSS), strace (the syscall profile), perf (the CPU breakdown of an
# ADD) and the reference dnsname
# plugin (podman 4's default chain, which dnsmasq backs).
missing=()
for pkg in time strace linux-perf golang-github-containernetworking-plugin-dnsname; do
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
	echo "bench: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

work="$(mktemp -d /tmp/moorbench-sh-XXXXXX)"
trap 'rm -rf "$work"' EXIT

quick="${QUICK:-0}"
default_out=docs/benchmarks.md
if [ "$quick" = 1 ] && [ -z "${OUT:-}" ]; then
	# A smoke run's numbers mean nothing: keep them out of docs/.
	default_out="$(mktemp -d /tmp/moorbench-quick-XXXXXX)/benchmarks.md"
fi
out="${OUT:-$default_out}"
svg="$(dirname "$out")/bench-add-latency.svg"

# The commit the binaries are built from (others may commit while the benchmark runs).
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git status --porcelain 2>/dev/null | head -1)" ]; then
	commit="$commit (work tree has uncommitted changes)"
fi

# moor's binaries, built as releases are (static, stripped). While a plugin directory
# does not build, build the others one by one so its suites are skipped with a note.
bin="$work/bin"
if ! BIN_DIR="$bin" bash scripts/build.sh bench >"$work/build.log" 2>&1; then
	echo "bench: scripts/build.sh failed; building the plugins one by one:" >&2
	tail -5 "$work/build.log" >&2
	mkdir -p "$bin"
	for dir in */; do
		dir="${dir%/}"
		[ -f "$dir/main.go" ] || continue
		CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$bin/moor-$dir" "./$dir" 2>/dev/null ||
			echo "bench: moor-$dir does not build; its suites are skipped" >&2
	done
fi
go build -o "$work/cnibench" ./scripts/cnibench

# The reference plugins built the way moor's are (static, stripped, this Go toolchain),
# from the Go module proxy at the version Debian ships, so that the comparison is of the
# code and not of the builds (Debian's are dynamic). dnsname is not on the proxy: Debian's
# binary. Without the proxy (offline), Debian's /usr/lib/cni and the report says so.
ref_deb="$(dpkg-query -W -f='${Version}' containernetworking-plugins 2>/dev/null || echo unknown)"
ref_version="${REF_VERSION:-v${ref_deb%%[+~-]*}}"
ref="$work/ref"
ref_desc="Debian containernetworking-plugins $ref_deb (dynamic, as packaged)"
ref_pkgs=()
for p in main/bridge main/macvlan main/loopback ipam/host-local ipam/static meta/portmap meta/firewall meta/tuning meta/bandwidth; do
	ref_pkgs+=("github.com/containernetworking/plugins/plugins/$p@$ref_version")
done
mkdir -p "$ref"
# Outside the repository, so that go install resolves the plugins' own module.
(cd "$work" && GOBIN="$ref" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "${ref_pkgs[@]}") >"$work/ref-build.log" 2>&1 || true
if [ -x "$ref/bridge" ] && [ -x "$ref/portmap" ]; then
	cp /usr/lib/cni/dnsname "$ref/" 2>/dev/null || true
	ref_desc="containernetworking-plugins $ref_version built static and stripped ($(go env GOVERSION), CGO_ENABLED=0, -ldflags '-s -w', from the Go module proxy; Debian ships $ref_deb), dnsname $(dpkg-query -W -f='${Version}' golang-github-containernetworking-plugin-dnsname 2>/dev/null || echo '?') from Debian"
else
	echo "bench: building the reference plugins $ref_version failed; using Debian's:" >&2
	tail -3 "$work/ref-build.log" >&2
	ref=/usr/lib/cni
fi

args=(-bin "$bin" -ref "$ref" -ref-desc "$ref_desc" -out "$work/cnibench.md" -svg "$svg")
[ -n "${ROUNDS:-}" ] && args+=(-rounds "$ROUNDS")
[ -n "${LARGE_ROUNDS:-}" ] && args+=(-large-rounds "$LARGE_ROUNDS")
[ -n "${GROWTH_ROUNDS:-}" ] && args+=(-growth-rounds "$GROWTH_ROUNDS")
[ "$quick" = 1 ] && args+=(-quick)

load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
started="$(date -u '+%Y-%m-%d %H:%M UTC')"
"$work/cnibench" "${args[@]}" "$@"

profile=""
if command -v strace >/dev/null; then
	echo "bench: running scripts/bench-profile.sh"
	if bash scripts/bench-profile.sh "$bin" "$ref" >"$work/profile.md" 2>"$work/profile.err"; then
		profile="$work/profile.md"
	else
		echo "bench: scripts/bench-profile.sh failed:" >&2
		tail -5 "$work/profile.err" >&2
	fi
fi

dns=""
if [ -f scripts/bench-overlay.sh ] && [ -z "${QUICK:-}" ]; then
	echo "bench: running scripts/bench-overlay.sh"
	if ! bash scripts/bench-overlay.sh >"$work/overlay.md" 2>"$work/overlay.err"; then
		echo "bench: scripts/bench-overlay.sh failed:" >&2
		tail -5 "$work/overlay.err" >&2
		: >"$work/overlay.md"
	fi
fi
# The encrypted overlay needs WireGuard, which runs in the VM lane's guest (NO_VM=1 skips it).
if [ -z "${QUICK:-}" ] && [ -z "${NO_VM:-}" ]; then
	echo "bench: running VM=1 scripts/bench-overlay.sh"
	if ! VM=1 bash scripts/bench-overlay.sh >"$work/overlay-vm.md" 2>"$work/overlay-vm.err"; then
		echo "bench: VM=1 scripts/bench-overlay.sh failed:" >&2
		tail -5 "$work/overlay-vm.err" >&2
	fi
fi
if [ -f scripts/bench-dns.sh ]; then
	echo "bench: running scripts/bench-dns.sh"
	dns_env=()
	if [ "$quick" = 1 ]; then
		# bench-dns.sh's own knobs, shrunk for a smoke run unless given.
		dns_env=(DNS_ROUNDS="${DNS_ROUNDS:-1}" DNS_NAMES="${DNS_NAMES:-100}" DNS_SAT_SECS="${DNS_SAT_SECS:-2}" DNS_LAT_SECS="${DNS_LAT_SECS:-2}")
	fi
	if env "${dns_env[@]}" bash scripts/bench-dns.sh >"$work/dns.md" 2>"$work/dns.err"; then
		dns="$work/dns.md"
	else
		echo "bench: scripts/bench-dns.sh failed:" >&2
		tail -20 "$work/dns.err" >&2
		{
			echo "## DNS"
			echo
			echo "scripts/bench-dns.sh failed; its last lines:"
			echo
			echo '```'
			tail -20 "$work/dns.err"
			echo '```'
		} >"$work/dns.md"
		dns="$work/dns.md"
	fi
fi
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

etcd_version="$(etcd --version 2>/dev/null | sed -n 's/^etcd Version: //p' || true)"
mem="$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
cpu="$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"

# overlay_vm_intro: how to read the encrypted overlay's figures.
overlay_vm_intro() {
	cat <<'EOF'
This machine's kernel has no WireGuard, so these run in the VM lane's guest (Debian's stock
kernel; scripts/vmtest.sh with MOOR_VMTEST_EXEC), in `moor lab` labs: hosts are network
namespaces on one underlay bridge, each with its own moor-overlay agent, etcd in the lab.
**The guest's CPU is emulated (qemu TCG): absolute numbers mean nothing, only ratios
between modes of the same run count**, and even those favour work that emulates cheaply:
per-byte cipher work (ChaCha20-Poly1305, in the guest's vector code) is emulated far more
expensively than the per-packet work VXLAN does.

* Throughput: iperf3 TCP, one stream, container to container across two hosts over an
  encrypted network (`encryption: wireguard`) and a clear VXLAN network of the same lab,
  and host to host over the bare underlay; the three modes interleaved in each round,
  medians of the rounds and their ratios; goal: WireGuard at least 0.5x clear VXLAN.
* Rotation: in a lab of encrypted hosts (agents only), one host after the other asks its
  agent to rotate its key (what `moor-overlay agent --rotate-key` sends). Per other host:
  when its agent had applied the new key to its device (the agent's "host joined" log line,
  millisecond stamps, read afterwards so nothing polls while the change spreads) and when
  its ICMP echo to the rotated host's gateway (one every 50 ms) was answered again. The
  rows give the last host's time per rotation, median and max over the rotations; goal:
  under 2 s. Every other host's device is checked to hold the new key and not the old one.

EOF
}

mkdir -p "$(dirname "$out")"
{
	echo "# Benchmarks"
	echo
	echo "Generated by \`scripts/bench.sh\` (\`make bench\`); do not edit by hand, rerun it. Ratios measured"
	echo "within one run are the comparable numbers; absolute times drift by about 30 % between runs on a shared machine."
	echo
	echo "## Machine"
	echo
	echo "| what | value |"
	echo "|---|---|"
	echo "| date | $started |"
	echo "| commit | $commit |"
	echo "| CPUs | $(nproc) × ${cpu:-unknown} |"
	echo "| memory | $mem |"
	echo "| kernel | $(uname -r) |"
	echo "| OS | $(. /etc/os-release && echo "$PRETTY_NAME") |"
	echo "| load average (1, 5, 15 min) | before: $load_before; after: $load_after |"
	echo "| Go | $(go env GOVERSION) |"
	echo "| reference plugins | $ref_desc |"
	echo "| etcd | ${etcd_version:-unknown} (Debian) |"
	echo
	cat "$work/cnibench.md"
	if [ -n "$profile" ]; then
		echo
		cat "$profile"
	fi
	if [ -n "$dns" ]; then
		echo
		grep -q '^#' "$dns" || printf '## DNS: moor-dns serve against dnsmasq (scripts/bench-dns.sh)\n\n'
		cat "$dns"
	fi
	if [ -s "$work/overlay.md" ]; then
		echo
		printf '## Overlay (scripts/bench-overlay.sh)\n\n```text\n'
		cat "$work/overlay.md"
		printf '```\n'
	fi
	echo
	echo "## Reliability"
	echo
	echo "Fault injection, churn soak, reboot simulation, fuzzing and their figures (leaks, the DNS"
	echo "sidecar's memory, threads and file descriptors over 2,000 ADD/DEL cycles) are in"
	echo "[reliability.md](reliability.md); the security properties in [security.md](security.md)."
	echo
	echo "## Encrypted overlay in the VM lab (scripts/bench-overlay.sh VM=1)"
	echo
	overlay_vm_intro
	if [ -s "$work/overlay-vm.md" ]; then
		cat "$work/overlay-vm.md"
	else
		echo "Not run (QUICK or NO_VM, or the VM lane failed: see the run's output)."
	fi
} >"$out"
echo "bench: wrote $out and $svg"
