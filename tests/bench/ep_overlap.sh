#!/bin/bash
# tests/bench/ep_overlap.sh - the four-component F&B overlap of the EP
# executor: DualPipe with PP x EP ranks forked locally (EP all-to-all over
# shm), each rank timing its ops (dpworker --timing).  Prints the mean F, B
# and F&B op times over all ranks, with the overlap and without it, and the
# ratio F&B / (F + B): 1.0 means no gain from running the two chunks as one
# op, lower is better.  Run by `make bench` (DPWORKER = the dpworker binary).
set -euo pipefail
DPWORKER=${DPWORKER:-build/dpworker}
PP=${PP:-2}
EP=${EP:-2}
MICRO=${MICRO:-8}
STEPS=${STEPS:-20}
LAYERS=${LAYERS:-4}

run() {
	local label=$1
	shift
	"$DPWORKER" --train-local --algo dualpipe --pp "$PP" --ep "$EP" --micro "$MICRO" \
		--steps "$STEPS" --layers "$LAYERS" --timing "$@" |
		awk '$3 == "times:" {
			for (i = 4; i < NF; i += 3) { if ($i == "overlapped") break; n[$i] += $(i + 1); t[$i] += $(i + 1) * $(i + 2) }
			ov += $NF
		}
		/^done:/ { wall = $0 }
		END {
			f = t["F"] / n["F"]; b = t["B"] / n["B"]; fb = t["F&B"] / n["F&B"]
			printf "%-12s F %7.3f ms  B %7.3f ms  F&B %7.3f ms  F&B/(F+B) %.3f  overlapped steps %d\n", label, f, b, fb, fb / (f + b), ov
		}' label="$label"
}

echo "dualpipe pp $PP x ep $EP, micro $MICRO, $STEPS steps, $LAYERS layers, demo model; mean op times over all ranks"
run "overlap"
run "no overlap" --no-overlap
