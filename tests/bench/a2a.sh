#!/bin/bash
# tests/bench/a2a.sh - naive versus two-hop expert all-to-all (make bench).
# Forked local ranks over tcp on 127.0.0.1, DeepSeek-V3-like routing (256
# experts, 8 groups, top-8, <= 4 nodes per token).  Two runs: unpaced, and
# with each rank's inter-node bytes paced to 1 Gbit/s so that the "inter-node
# fabric" is the bottleneck, as InfiniBand is against NVLink.  Each prints
# time, bytes crossing nodes and the naive/two-hop ratios; dpctl fails if the
# bytes differ from the (token, remote node) / (token, remote rank) formula.
set -euo pipefail
DPCTL=${DPCTL:-build/dpctl}
args=(--nodes "${A2A_NODES:-2}" --ranks-per-node "${A2A_RPN:-4}" --tokens "${A2A_TOKENS:-512}"
	--hidden "${A2A_HIDDEN:-1024}" --experts 256 --groups 8 --max-nodes 4 --topk 8
	--iters "${A2A_ITERS:-3}")
echo "-- unpaced loopback"
"$DPCTL" bench a2a "${args[@]}"
echo "-- inter-node paced to ${A2A_MBPS:-1000} Mbit/s per rank"
"$DPCTL" bench a2a "${args[@]}" --inter-mbps "${A2A_MBPS:-1000}"
