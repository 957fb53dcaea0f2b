#!/usr/bin/env bash
# Makes, once, the Debian 13 (trixie) root file system in which integration/runtimes runs
# podman 5 (netavark with external plugins; Debian 12 has podman 4.3 and netavark 1.4),
# and prints its path. Later calls find it built and print the path at once.
#
#   MOOR_PODMAN5_CACHE   where the root is kept (default /var/cache/moor-podman5): outside
#                        the repository, so reruns on the same machine (CI included) reuse it
#   MOOR_DEBIAN_MIRROR   the archive (default: the first Debian URI of this machine's apt
#                        sources, else http://deb.debian.org/debian)
#
# The root is made with mmdebstrap (--variant=apt) from the same archive as the machine's
# own packages; the machine's apt setup is not touched. A stamp file names the package set
# it was made with: a changed set rebuilds it. A lock serialises concurrent callers.
#
# Exit status: 0 with the path on stdout; 3 when the archive cannot be reached (the
# caller reports a skip, naming the cause); anything else is a failure. mmdebstrap and
# curl come from scripts/runtime-deps.sh. The root holds no moor binary: the tests bind
# theirs in, per run.
set -euo pipefail

suite=trixie
packages=(podman netavark aardvark-dns conmon runc iptables nftables iproute2 catatonit mount)
cache=${MOOR_PODMAN5_CACHE:-/var/cache/moor-podman5}
root=$cache/root
stamp=$cache/root.stamp
want="$suite ${packages[*]}"

mirror=${MOOR_DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
	mirror=$(grep -hsE '^URIs:.*/debian/?$' /etc/apt/sources.list.d/*.sources | head -n1 | awk '{print $2}' || true)
fi
if [ -z "$mirror" ]; then
	mirror=$(grep -hsE '^deb +(\[[^]]*\] +)?https?://[^ ]*/debian/? ' /etc/apt/sources.list | head -n1 |
		sed -E 's/^deb +(\[[^]]*\] +)?//; s/ .*//' || true)
fi
mirror=${mirror:-http://deb.debian.org/debian}
mirror=${mirror%/}

mkdir -p "$cache"
exec 9>"$cache/lock"
flock 9

if [ -d "$root" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
	echo "$root"
	exit 0
fi

for tool in mmdebstrap curl; do
	command -v "$tool" >/dev/null || { echo "podman5-root: $tool is missing: run scripts/runtime-deps.sh" >&2; exit 1; }
done
if ! curl -fsS -m 30 -o /dev/null "$mirror/dists/$suite/InRelease" 2>"$cache/probe.err"; then
	echo "podman5-root: the archive $mirror cannot be reached ($(tr -d '\n' <"$cache/probe.err")): no $suite root" >&2
	exit 3
fi

echo "podman5-root: making the $suite root in $root (once; about a minute)" >&2
rm -rf "$root.new" "$root" "$stamp"
include=$(
	IFS=,
	echo "${packages[*]}"
)
if ! mmdebstrap --quiet --variant=apt --include="$include" "$suite" "$root.new" "deb $mirror $suite main" >&2; then
	rm -rf "$root.new"
	echo "podman5-root: mmdebstrap failed" >&2
	exit 1
fi
# The mount point the tests bind their per-run directory onto.
mkdir -p "$root.new/opt/moor"
mv "$root.new" "$root"
echo "$want" >"$stamp"
echo "$root"
