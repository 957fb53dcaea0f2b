#!/usr/bin/env bash
# Churn soak (run as root): workers attach and detach containers on bridge + moor-dns
# networks in throwaway network namespaces (ADD, a lookup of the container's own name, DEL),
# then check that no address, link, rule, record or netns leaked and that the DNS
# sidecar's descriptors are back to their count after the warm-up and its threads and
# memory did not grow with the cycles. It is integration TestReliabilityChurn with soak
# sizes; `go test ./...` runs the same test with 96 cycles.
#
# Usage: scripts/soak.sh [cycles] [workers]     default 2000 cycles, 8 workers
# Environment: MOOR_SOAK_MAX bounds the run (no cycle starts after it; default 20m),
#              MOOR_SOAK_DRIVERS picks the networks (default "bridge"; the overlay driver
#              registers itself in integration/reliability_churn_test.go churnDrivers).
# The figures are in the line starting with SOAK; docs/reliability.md records them.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
	echo "soak.sh: needs root (network namespaces)" >&2
	exit 1
fi
export MOOR_SOAK_CYCLES="${1:-${MOOR_SOAK_CYCLES:-2000}}"
export MOOR_SOAK_WORKERS="${2:-${MOOR_SOAK_WORKERS:-8}}"
export MOOR_SOAK_MAX="${MOOR_SOAK_MAX:-20m}"
export MOOR_SOAK_DRIVERS="${MOOR_SOAK_DRIVERS:-bridge}"
# The hard bound: the soak's own bound plus time to build, warm up and check.
hard_timeout=90m
echo "soak: ${MOOR_SOAK_CYCLES} cycles, ${MOOR_SOAK_WORKERS} workers, drivers ${MOOR_SOAK_DRIVERS}, at most ${MOOR_SOAK_MAX}"
set +e
go test -count=1 -timeout "$hard_timeout" -run '^TestReliabilityChurn$' -v ./integration/ 2>&1 |
	grep -E '^(--- |    --- |ok|FAIL|PASS)|SOAK|reliability_'
exit "${PIPESTATUS[0]}"
