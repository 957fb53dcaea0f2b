#!/usr/bin/env bash
# Installs what moor's tests, demo and benchmarks need on a fresh Debian 12 machine: Debian
# packages (only those missing; `apt-get update` once) and Go tools from the module proxy.
# Idempotent; run as root.
set -euo pipefail

debian_packages=(
	iproute2 iptables nftables kmod conntrack
	etcd-server etcd-client dnsmasq-base dnsperf aardvark-dns
	busybox-static iperf3 iputils-ping
	containernetworking-plugins
	qemu-system-x86 # the VM lane (scripts/vmtest.sh): Debian's stock kernel under qemu
)

# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
install_missing deps "${debian_packages[@]}"

gobin="$(go env GOPATH)/bin"
staticcheck_version=v0.8.2
if ! "$gobin/staticcheck" -version 2>/dev/null | grep -q "${staticcheck_version#v}"; then
	echo "deps: installing staticcheck $staticcheck_version"
	go install "honnef.co/go/tools/cmd/staticcheck@${staticcheck_version}"
fi

# Kernel modules the tests use; loading fails harmlessly where they are built in.
for mod in bridge veth vxlan macvlan br_netfilter nf_tables nf_conntrack; do
	modprobe -q "$mod" 2>/dev/null || true
done
# ifb (traffic shaping of container egress) is loaded with no devices of its own: loaded
# on demand, it would create ifb0 and ifb1 in the machine's own namespace.
modprobe -q ifb numifbs=0 2>/dev/null || true
