#!/usr/bin/env bash
# Builds every moor binary into bin/ (or $BIN_DIR), statically and stripped, with the
# version stamped in. Usage: scripts/build.sh [version]
set -euo pipefail
cd "$(dirname "$0")/.."
version="${1:-${MOOR_VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}}"
bin_dir="${BIN_DIR:-bin}"
mkdir -p "$bin_dir"
ldflags="-s -w -X github.com/moornet/moor/plugins.Version=${version}"
export CGO_ENABLED=0
# Every directory at the root with a main.go is a plugin: moor-<dir>.
for dir in */; do
	dir="${dir%/}"
	[ -f "$dir/main.go" ] || continue
	tags=()
	if [ "$dir" = dns ]; then
		# moor-dns leaves the etcd record store (etcd client, gRPC) out and hands the calls
		# of etcd-backed networks to moor-dns-etcd, the build with it (dns/delegate.go).
		go build -trimpath -ldflags "$ldflags" -o "$bin_dir/moor-dns-etcd" ./dns
		tags=(-tags moor_noetcd)
	fi
	go build "${tags[@]}" -trimpath -ldflags "$ldflags" -o "$bin_dir/moor-$dir" "./$dir"
done
# The CLI and other commands under cmd/ keep their own names.
if [ -d cmd ]; then
	for dir in cmd/*/; do
		dir="${dir%/}"
		[ -f "$dir/main.go" ] || continue
		go build -trimpath -ldflags "$ldflags" -o "$bin_dir/$(basename "$dir")" "./$dir"
	done
fi
echo "built $(ls "$bin_dir" | wc -l) binaries into $bin_dir (version $version)"
