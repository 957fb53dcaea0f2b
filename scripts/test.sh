#!/usr/bin/env bash
# Runs every moor test: formatting, go vet, staticcheck, then all Go tests (unit,
# kernel-level in throwaway network namespaces, integration through libcni and real
# runtimes), then the VM lane (scripts/vmtest.sh: the kernel tests on Debian's stock
# kernel in qemu). Installs what it needs first. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash scripts/runtime-deps.sh

# The podman 5 lane (integration/runtimes TestPodman5) runs podman 5 in a Debian 13 root
# that podman5-root.sh makes once per machine (cached outside the clone). Without a route
# to the archive the lane is skipped, and this script says so here and at the end.
echo "== podman 5 lane: Debian 13 root"
p5_notice=""
p5_err=$(mktemp)
p5_start=$(date +%s)
set +e
p5_root=$(bash scripts/podman5-root.sh 2>"$p5_err")
p5_rc=$?
set -e
cat "$p5_err" >&2
case $p5_rc in
0)
	export MOOR_PODMAN5_ROOT="$p5_root"
	echo "podman 5 lane: root $p5_root ready ($(($(date +%s) - p5_start)) s)"
	;;
3)
	export MOOR_PODMAN5_SKIP
	MOOR_PODMAN5_SKIP=$(tail -n1 "$p5_err")
	p5_notice="SKIPPED: the podman 5 lane (integration/runtimes TestPodman5) did not run: $MOOR_PODMAN5_SKIP"
	echo "$p5_notice"
	;;
*)
	rm -f "$p5_err"
	echo "podman 5 lane: scripts/podman5-root.sh failed (exit $p5_rc)"
	exit "$p5_rc"
	;;
esac
rm -f "$p5_err"

export PATH="$(go env GOPATH)/bin:$PATH"
echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go') 2>/dev/null || true)
if [ -n "$unformatted" ]; then
	echo "gofmt would change:"; echo "$unformatted"; exit 1
fi
echo "== go vet"
go vet ./...
echo "== staticcheck"
staticcheck ./...
echo "== go test"
# -p 2: two packages at a time on a 2-core machine; kernel tests of different packages
# use different netns prefixes and never share objects.
go test -count=1 -p 2 -timeout 20m "$@" ./...
echo "== fuzz (10 s per target; go test above ran the seed corpora)"
FUZZTIME=10s bash scripts/fuzz.sh
echo "== VM lane (kernel tests on Debian's stock kernel)"
bash scripts/vmtest.sh
if [ -n "$p5_notice" ]; then
	echo "== NOTE: $p5_notice"
fi
