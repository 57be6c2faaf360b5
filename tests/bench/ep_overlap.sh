#!/bin/bash
# tests/bench/ep_overlap.sh - the four-component F&B overlap of the EP
# executor: DualPipe with PP x EP ranks forked locally, each rank timing its
# ops (dpworker --timing).  For two fabrics - shm (the all-to-all is a
# memory copy) and tcp paced to MBPS Mbit/s per rank with every EP rank its
# own "node" (a slow inter-node link; the pacing sleeps, so it costs no
# CPU) - prints the mean F, B and F&B op times over all ranks with the
# overlap and without, the ratio F&B / (F + B) (1.0: no gain from running
# the two chunks as one op), and overlapped F&B / plain F&B.  Run by
# `make bench` (DPWORKER = the dpworker binary).
set -euo pipefail
DPWORKER=${DPWORKER:-build/dpworker}
PP=${PP:-2}
EP=${EP:-2}
MICRO=${MICRO:-8}
STEPS=${STEPS:-10}
LAYERS=${LAYERS:-4}
MBPS=${MBPS:-40}

# run LABEL ARGS...: one line of means; the F&B mean goes to $fb
run() {
	local label=$1 line
	shift
	line=$("$DPWORKER" --train-local --algo dualpipe --pp "$PP" --ep "$EP" --micro "$MICRO" \
		--steps "$STEPS" --layers "$LAYERS" --timing "$@" |
		awk '$3 == "times:" {
			for (i = 4; i < NF; i += 3) { if ($i == "overlapped") break; n[$i] += $(i + 1); t[$i] += $(i + 1) * $(i + 2) }
			ov += $NF
		}
		END {
			f = t["F"] / n["F"]; b = t["B"] / n["B"]; fb = t["F&B"] / n["F&B"]
			printf "%.3f %-26s F %7.3f ms  B %7.3f ms  F&B %7.3f ms  F&B/(F+B) %.3f  overlapped steps %d\n", fb, label, f, b, fb, fb / (f + b), ov
		}' label="$label")
	fb=${line%% *}
	echo "${line#* }"
}

echo "dualpipe pp $PP x ep $EP, micro $MICRO, $STEPS steps, $LAYERS layers, demo model; mean op times over all ranks"
for fabric in shm tcp; do
	extra=()
	[[ $fabric == tcp ]] && extra=(--ep-mbps "$MBPS")
	name=$fabric
	[[ $fabric == tcp ]] && name="tcp ${MBPS} Mbit/s"
	run "$name, overlap" "${extra[@]}"
	with=$fb
	run "$name, no overlap" "${extra[@]}" --no-overlap
	without=$fb
	awk -v a="$with" -v b="$without" -v n="$name" \
		'BEGIN { printf "%-26s F&B overlapped / plain: %.3f\n", n, a / b }'
done
