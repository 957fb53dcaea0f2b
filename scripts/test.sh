#!/usr/bin/env bash
# Runs every moor test: formatting, go vet, staticcheck, then all Go tests (unit,
# kernel-level in throwaway network namespaces, integration through libcni and real
# runtimes), then the VM lane (scripts/vmtest.sh: the kernel tests on Debian's stock
# kernel in qemu). Installs what it needs first. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash scripts/runtime-deps.sh

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
