#!/bin/bash
# contrib/bench.sh BUILD_DIR - run every benchmark in tests/bench/*.sh.  Each
# prints its figures and a ratio against a peer measured in the same run.
set -euo pipefail
B=${1:-build}
export DPCTL="$B/dpctl" DPWORKER="$B/dpworker"
shopt -s nullglob
n=0
for b in tests/bench/*.sh; do
	echo "== $b"
	bash "$b"
	n=$((n + 1))
done
echo "bench: $n benchmarks run"
