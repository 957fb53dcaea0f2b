#!/usr/bin/env bash
# Runs every Go fuzz target of moor, one after the other, each for a bounded time:
# the config decoding of every plugin (bridge, dns, host, none, ipam), CNI_ARGS and the
# whole dispatch (plugins), the DNS server's packet path (dns/server) and the record
# store's files and names (dns/records). `go test ./...` runs only their committed seeds.
#
# Usage: scripts/fuzz.sh [fuzztime]      default 60s per target (or $FUZZTIME)
#        FUZZ_MATCH=Dispatch scripts/fuzz.sh 10m   only targets whose name matches
# An input that fails is written to <package>/testdata/fuzz/<Target>/ by go test: fix the
# bug and commit the file, it becomes a regression seed. Longer runs (hours) are how to
# use it before a release: docs/reliability.md.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime="${1:-${FUZZTIME:-60s}}"
match="${FUZZ_MATCH:-}"

# Targets are found in the sources, so no test binary (and no TestMain) runs to list them.
mapfile -t found < <(grep -rl --include='*_test.go' '^func Fuzz' . | grep -v '^./_' | sort)
status=0
ran=0
for file in "${found[@]}"; do
	pkg="./$(dirname "${file#./}")"
	for target in $(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$file"); do
		if [ -n "$match" ] && [[ "$target" != *"$match"* ]]; then
			continue
		fi
		echo "== $pkg $target ($fuzztime)"
		ran=$((ran + 1))
		if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg"; then
			status=1
		fi
	done
done
echo "fuzzed $ran targets for $fuzztime each"
exit $status
