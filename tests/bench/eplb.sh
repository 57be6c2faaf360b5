#!/bin/bash
# tests/bench/eplb.sh - time `dpctl eplb` on DeepSeek-V3-shaped loads (61
# layers x 256 experts, 8 groups, heavy-tailed routed-token counts) and print
# the balance ratio (max GPU load / mean GPU load, worst layer) of the EPLB
# placement against the peer: the unbalanced placement, expert e on GPU
# e*P/E with no redundant experts.
#
# R must be a multiple of P: R = 288 (32 redundant experts, as DeepSeek-V3
# prefill and decode) fits P = 32, 72, 96, 144; for P = 64, 128, 256 the
# rows use one redundant slot per GPU or more (R = 320, 384, 512).
set -euo pipefail
DPCTL=${DPCTL:-build/dpctl}
RUNS=${EPLB_BENCH_RUNS:-10}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Routed-token counts with a fixed seed: log-normal (sigma 0.7) around 4096
# per expert, so a few experts per layer run 3-5x hot, as in profiles.
awk 'BEGIN {
	srand(20251);
	pi = atan2(0, -1);
	printf "{\"weight\": [";
	for (l = 0; l < 61; l++) {
		printf "%s[", l ? "," : "";
		for (e = 0; e < 256; e++) {
			z = sqrt(-2 * log(1 - rand())) * cos(2 * pi * rand());
			printf "%s%d", e ? "," : "", int(4096 * exp(0.7 * z));
		}
		printf "]";
	}
	printf "]}\n";
}' >"$tmp/w.json"

printf '%-6s %-3s %-4s %-5s %-13s %9s %9s %7s %9s %9s\n' R G N P policy before after ratio \
	"wall ms" "cpu ms"
for cfg in "288 8 4 32" "288 8 8 72" "320 8 8 64" "288 8 12 96" "384 8 16 128" \
	"288 8 18 144" "288 8 32 96" "512 8 32 256"; do
	set -- $cfg
	args=(eplb --loads "$tmp/w.json" --replicas "$1" --groups "$2" --nodes "$3" --gpus "$4" --json)
	"$DPCTL" "${args[@]}" >"$tmp/out.json"
	# bash's time keyword: real, user and sys seconds of the whole loop
	TIMEFORMAT='%R %U %S'
	times=$({ time for ((i = 0; i < RUNS; i++)); do
		"$DPCTL" "${args[@]}" >/dev/null
	done; } 2>&1)
	before=$(sed -n 's/.*"balance_before":\([0-9.eE+-]*\).*/\1/p' "$tmp/out.json")
	after=$(sed -n 's/.*"balance_after":\([0-9.eE+-]*\).*/\1/p' "$tmp/out.json")
	policy=global
	if [ $(($2 % $3)) -eq 0 ]; then policy=hierarchical; fi
	awk -v R="$1" -v G="$2" -v N="$3" -v P="$4" -v pol="$policy" -v b="$before" -v a="$after" \
		-v t="$times" -v runs="$RUNS" 'BEGIN {
		split(t, s, " ");
		printf "%-6s %-3s %-4s %-5s %-13s %9.4f %9.4f %7.3f %9.1f %9.1f\n",
			R, G, N, P, pol, b, a, a / b, s[1] / runs * 1e3, (s[2] + s[3]) / runs * 1e3 }'
done
echo "before: expert e on GPU e*P/E, no replicas (the peer); after: EPLB; ratio = after / before"
echo "(balance = max GPU load / mean GPU load of the worst of 61 layers; wall/cpu ms per run"
echo " of the whole dpctl process: read 61x256 JSON, plan, write JSON; $RUNS runs each)"
