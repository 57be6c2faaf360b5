#!/bin/bash
# tests/bench/plan.sh - how long `dpctl plan` takes for the 2048-GPU
# DeepSeek-V3 recipe (target: well under 50 ms).  The peer measured in the
# same run is `dpctl version`, i.e. process start-up alone; the plan's own
# cost is the difference.
set -euo pipefail
DPCTL=${DPCTL:-build/dpctl}
n=20
t() {
	local s e
	s=$(date +%s%N)
	for _ in $(seq $n); do "$@" >/dev/null; done
	e=$(date +%s%N)
	echo $(((e - s) / n / 1000))
}
plan_us=$(t "$DPCTL" plan --json recipes/deepseek-v3.yaml)
base_us=$(t "$DPCTL" version)
own=$((plan_us > base_us ? plan_us - base_us : 0))
echo "plan deepseek-v3 (2048 ranks): ${plan_us} us per run, start-up alone ${base_us} us"
awk -v o="$own" 'BEGIN { printf "plan's own cost: %.2f ms = %.3f x the 50 ms budget\n", o / 1000, o / 50000 }'
