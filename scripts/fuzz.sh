#!/usr/bin/env bash
# Runs every Go fuzz target of moor, one after the other, each for a bounded time:
# the config decoding of every plugin (bridge, dns, host, none, ipam), CNI_ARGS and the
# whole dispatch (plugins), the DNS server's packet path (dns/server) and the record
# store's files and names (dns/records), and the result printer against the CNI library
# (plugins/resultjson). `go test ./...` runs only their committed seeds.
#
# Usage: scripts/fuzz.sh [fuzztime]      default 60s per target (or $FUZZTIME)
#        FUZZ_MATCH=Dispatch scripts/fuzz.sh 10m   only targets whose name matches
# fuzztime is a duration as sleep(1) reads it (10s, 2.5s, 5m), or Nx for N executions.
# An input that fails is written to <package>/testdata/fuzz/<Target>/ by the fuzzer: fix
# the bug and commit the file, it becomes a regression seed. Longer runs (hours) are how
# to use it before a release: docs/reliability.md.
#
# How a run ends. A target fails only when the fuzzer reports a failing input (or the
# binary cannot run); the time budget never fails it. `go test -fuzztime 10s` cannot
# promise that: when its deadline fires, Go's coordinator (internal/fuzz, up to Go 1.26)
# can report its own deadline as the target's failure, "context deadline exceeded" with no
# failing input (golang/go#75804): it checks the workers' context just before the timer
# has cancelled it. The window is widest when the machine is loaded or when both workers
# are minimising a new input (no execs are counted then: the "0/sec" lines). So this
# script gives the fuzzer no deadline: it runs the package's instrumented test binary,
# waits until the coordinator has started (its first "fuzz: elapsed" line: from then on it
# handles an interrupt as the end of fuzzing), lets it fuzz for fuzztime and then sends
# SIGINT to the coordinator alone, the stop Go's fuzzer handles as a clean end (it stops
# its workers itself and keeps what they found). An Nx budget has no deadline at all and
# goes straight to the fuzzer.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime="${1:-${FUZZTIME:-60s}}"
match="${FUZZ_MATCH:-}"
root=$(pwd)
work=$(mktemp -d)
pid=
cleanup() {
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -INT "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
	rm -rf "$work"
}
trap cleanup EXIT
fuzzcache="$(go env GOCACHE)/fuzz"

# fuzz_target PKG TARGET BINARY: one bounded run; returns the binary's exit status.
fuzz_target() {
	local pkg=$1 target=$2 bin=$3 log="$work/log" cache status=0
	cache="$fuzzcache/$(go list "./$pkg")" # where `go test -fuzz` keeps the interesting inputs
	: >"$log"
	if [[ "$fuzztime" == *x ]]; then
		(cd "$root/$pkg" && "$bin" -test.run '^$' -test.fuzz "^${target}\$" -test.fuzztime "$fuzztime" -test.fuzzcachedir "$cache") || status=$?
		return $status
	fi
	(cd "$root/$pkg" && exec "$bin" -test.run '^$' -test.fuzz "^${target}\$" -test.fuzzcachedir "$cache") >"$log" 2>&1 &
	pid=$!
	tail -n +1 --pid="$pid" -f "$log" &
	local tailpid=$!
	until grep -q '^fuzz: elapsed' "$log" || ! kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
	# Fuzz for fuzztime, or less if the fuzzer ends by itself (a failing input).
	timeout "$fuzztime" tail --pid="$pid" -f /dev/null || true
	kill -INT "$pid" 2>/dev/null || true
	wait "$pid" || status=$?
	pid=
	wait "$tailpid" || true
	return $status
}

# Targets are found in the sources, so no test binary (and no TestMain) runs to list them.
mapfile -t found < <(grep -rl --include='*_test.go' '^func Fuzz' . | grep -v '^./_' | sort)
status=0
ran=0
for file in "${found[@]}"; do
	pkg="$(dirname "${file#./}")"
	bin=""
	for target in $(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$file"); do
		if [ -n "$match" ] && [[ "$target" != *"$match"* ]]; then
			continue
		fi
		if [ -z "$bin" ]; then
			# -fuzz builds the binary with coverage instrumentation, as `go test -fuzz` does.
			bin="$work/$(echo "$pkg" | tr / _).test"
			go test -c -fuzz "^${target}\$" -o "$bin" "./$pkg"
		fi
		echo "== ./$pkg $target ($fuzztime)"
		ran=$((ran + 1))
		if fuzz_target "$pkg" "$target" "$bin"; then
			echo "ok   ./$pkg $target"
		else
			echo "FAIL ./$pkg $target"
			status=1
		fi
	done
done
echo "fuzzed $ran targets for $fuzztime each"
exit $status
