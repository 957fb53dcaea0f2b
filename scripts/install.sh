#!/usr/bin/env bash
# Installs moor's plugins (moor-*) into a CNI bin dir (default /opt/cni/bin), the `moor`
# CLI into a command dir (default /usr/local/bin) and, with --examples, the example
# conflists into a CNI config dir (default /etc/cni/net.d).
#
#   scripts/install.sh [--from DIR] [--bin-dir DIR] [--cli-dir DIR] [--conf-dir DIR] [--examples] [--loopback]
#
# --from names the built binaries (default bin/, built when empty).
#
# It never overwrites a file that is not moor's: an existing binary is replaced only when
# it answers as moor (its about line says "moor"). --loopback also installs moor-none as
# `loopback` (containerd's CRI calls a plugin of that type for every pod) when no loopback
# binary exists there.
set -euo pipefail
cd "$(dirname "$0")/.."
bin_dir=/opt/cni/bin
cli_dir=/usr/local/bin
conf_dir=/etc/cni/net.d
examples=false
loopback=false
from=bin
while [ $# -gt 0 ]; do
	case "$1" in
	--from) from="$2"; shift 2 ;;
	--bin-dir) bin_dir="$2"; shift 2 ;;
	--cli-dir) cli_dir="$2"; shift 2 ;;
	--conf-dir) conf_dir="$2"; shift 2 ;;
	--examples) examples=true; shift ;;
	--loopback) loopback=true; shift ;;
	*) echo "install.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done
if [ "$from" = bin ] && { [ ! -d bin ] || [ -z "$(ls bin)" ]; }; then
	bash scripts/build.sh
fi

# A plugin says "<name>: moor <version>" when run without CNI_COMMAND; the CLI says
# "moor <version>" to `moor version`.
is_moor() {
	[ -x "$1" ] || return 1
	env -i "$1" 2>&1 | head -1 | grep -q ": moor " && return 0
	[ "$(basename "$1")" = moor ] && env -i "$1" version 2>/dev/null | grep -q "^moor "
}

install_one() { # src dest
	if [ -e "$2" ] && ! is_moor "$2"; then
		echo "install.sh: $2 exists and is not moor's; left alone" >&2
		return 0
	fi
	install -m 0755 "$1" "$2.moor-new" && mv -f "$2.moor-new" "$2"
}

mkdir -p "$bin_dir" "$cli_dir"
for f in "$from"/moor-*; do
	install_one "$f" "$bin_dir/$(basename "$f")"
done
[ -e "$from/moor" ] && install_one "$from/moor" "$cli_dir/moor"
if $loopback && [ ! -e "$bin_dir/loopback" ]; then
	install_one "$from/moor-none" "$bin_dir/loopback"
fi
if $examples && [ -d examples ]; then
	mkdir -p "$conf_dir"
	for f in examples/*.conflist; do
		[ -e "$f" ] || continue
		dest="$conf_dir/$(basename "$f")"
		if [ -e "$dest" ] && ! grep -q '"moor-' "$dest"; then
			echo "install.sh: $dest exists and is not moor's; left alone" >&2
			continue
		fi
		install -m 0644 "$f" "$dest"
	done
fi
echo "installed moor's plugins into $bin_dir and the CLI into $cli_dir"
