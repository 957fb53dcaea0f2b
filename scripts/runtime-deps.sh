#!/usr/bin/env bash
# Installs the container runtimes that integration/runtimes drives, on a fresh Debian 12
# machine: Debian's podman (4.3, CNI backend), containerd (1.6) and runc, with conmon,
# busybox-static (the test images' only binary) and iproute2; crictl and cnitool from the
# Go module proxy into $(go env GOPATH)/bin; mmdebstrap and curl, with which
# scripts/podman5-root.sh makes the Debian 13 root that podman 5 runs in. Only what is missing is installed (`apt-get
# update` once). Idempotent; run as root. scripts/test.sh calls it.
#
# The local images (busybox, and a pause image for containerd's CRI) are not built here:
# the tests build them on each run from busybox-static and integration/runtimes/pause, and
# import them into the per-run podman and containerd stores they create (no registry).
#
# Installing runs no daemon: Debian's containerd and podman packages ship systemd units,
# which only start where systemd runs; the tests start their own containerd.
set -euo pipefail

debian_packages=(podman containerd runc conmon busybox-static iproute2 util-linux mmdebstrap curl)

# crictl: the newest cri-tools the module proxy serves here speaks CRI v1, which
# containerd 1.6 serves (v1.26.x, the release line of containerd 1.6, is not served). Its
# first build takes about four minutes on two cores; later runs find it installed.
crictl_module=sigs.k8s.io/cri-tools/cmd/crictl
crictl_version=v1.34.0
cnitool_module=github.com/containernetworking/cni/cnitool
cnitool_version=v1.3.1

# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
install_missing runtime-deps "${debian_packages[@]}"

gobin="$(go env GOBIN)"
[ -n "$gobin" ] || gobin="$(go env GOPATH)/bin"
stamp_dir="$gobin/.moor-versions"
mkdir -p "$stamp_dir"

# go_tool NAME MODULE VERSION: go install, unless this version is already there (neither
# tool prints its module version when built by go install, so a stamp file records it).
go_tool() {
	local name=$1 module=$2 version=$3
	if [ -x "$gobin/$name" ] && [ "$(cat "$stamp_dir/$name" 2>/dev/null)" = "$version" ]; then
		return 0
	fi
	echo "runtime-deps: installing $name $version (go install)"
	go install "$module@$version"
	echo "$version" >"$stamp_dir/$name"
}
go_tool crictl "$crictl_module" "$crictl_version"
go_tool cnitool "$cnitool_module" "$cnitool_version"
