#!/bin/bash
# tests/bench/plan.sh - how much CPU `dpctl plan` takes for the 2048-GPU
# DeepSeek-V3 recipe (target: well under 50 ms).  The peer measured in the
# same run is `dpctl version`, i.e. process start-up alone; the plan's own
# cost is the difference.  CPU time (user+sys), not wall time, so a busy
# machine does not distort it.
set -euo pipefail
DPCTL=${DPCTL:-build/dpctl}
n=20
cpu_us() {
	local TIMEFORMAT='%3U %3S' out
	out=$({ time (for _ in $(seq $n); do "$@" >/dev/null; done); } 2>&1)
	awk -v n=$n '{ printf "%d", ($1 + $2) * 1e6 / n }' <<<"$out"
}
plan_us=$(cpu_us "$DPCTL" plan --json recipes/deepseek-v3.yaml)
base_us=$(cpu_us "$DPCTL" version)
own=$((plan_us > base_us ? plan_us - base_us : 0))
echo "plan deepseek-v3 (2048 ranks): ${plan_us} us CPU per run; start-up alone (dpctl version): ${base_us} us"
awk -v o="$own" 'BEGIN { printf "plan own cost: %.2f ms = %.3f x the 50 ms budget\n", o / 1000, o / 50000 }'

# The same with EPLB placement in the plan: 64 redundant experts (320 slots,
# 5 per EP rank; 32 would not split over EP64) and skewed loads for the 58
# MoE layers: the hierarchical policy over the 8 nodes of an EP group.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
awk 'BEGIN { srand(7); printf "{\"weight\": ["; for (l = 0; l < 58; l++) {
	printf "%s[", l ? "," : ""; for (e = 0; e < 256; e++)
		printf "%s%d", e ? "," : "", int(rand() * 100) * (rand() < 0.1 ? 40 : 1); printf "]" }
	print "]}" }' >"$tmp/loads.json"
sed 's/^  max_nodes_per_token: 4$/&\n  redundant_experts: 64\n  expert_loads: loads.json/' \
	recipes/deepseek-v3.yaml >"$tmp/dsv3-eplb.yaml"
"$DPCTL" plan "$tmp/dsv3-eplb.yaml" | grep -q '^# experts: EPLB hierarchical'
eplb_us=$(cpu_us "$DPCTL" plan --json "$tmp/dsv3-eplb.yaml")
own=$((eplb_us > base_us ? eplb_us - base_us : 0))
echo "plan deepseek-v3 + EPLB (64 redundant experts, 58 layers of loads): ${eplb_us} us CPU per run"
awk -v o="$own" 'BEGIN { printf "plan+EPLB own cost: %.2f ms = %.3f x the 50 ms budget\n", o / 1000, o / 50000 }'
