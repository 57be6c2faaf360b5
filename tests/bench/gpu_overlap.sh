#!/bin/bash
# tests/bench/gpu_overlap.sh - the F&B overlap on the cuda model backend:
# DualPipe PP x EP ranks forked locally (all on GPU $DEVICE), each rank
# timing its ops (dpworker --timing).  Prints the mean F, B and F&B op times
# over all ranks with the four-component overlap and without it
# (--no-overlap), the ratio F&B / (F + B) (1.0: running the two chunks as
# one op gains nothing over running F and B apart), and overlapped F&B /
# plain F&B.  Needs a GPU and a CUDA build: otherwise it says why and
# skips.  Run by `make bench` (DPWORKER = the dpworker binary).
set -euo pipefail
: "${DPWORKER:=build/dpworker}" "${PP:=2}" "${EP:=2}" "${MICRO:=8}" "${STEPS:=10}" "${LAYERS:=4}"
: "${DEVICE:=0}" "${BACKEND:=cuda}" # BACKEND=emu: the same run on the host emulator

if ! why=$("$DPWORKER" --train-local --algo 1f1b --pp 1 --micro 1 --steps 1 --layers 1 \
	--backend "$BACKEND" --device "$DEVICE" 2>&1 >/dev/null); then
	echo "gpu_overlap: skipped, no usable GPU: ${why%%$'\n'*}"
	exit 0
fi

# run LABEL ARGS...: one line of means; the F&B mean goes to $fb
run() {
	local label=$1 line
	shift
	line=$("$DPWORKER" --train-local --algo dualpipe --pp "$PP" --ep "$EP" --micro "$MICRO" \
		--steps "$STEPS" --layers "$LAYERS" --backend "$BACKEND" --device "$DEVICE" --timing "$@" |
		awk -v label="$label" '$3 == "times:" {
			for (i = 4; i + 2 <= NF; i += 3) {
				if ($i == "overlapped") break
				n[$i] += $(i + 1); t[$i] += $(i + 1) * $(i + 2)
			}
		}
		END {
			if (!n["F"] || !n["B"] || !n["F&B"]) { print "0 " label ": no F, B or F&B ops timed"; exit }
			f = t["F"] / n["F"]; b = t["B"] / n["B"]; fb = t["F&B"] / n["F&B"]
			printf "%.4f %-12s F %8.3f ms  B %8.3f ms  F&B %8.3f ms  F&B/(F+B) %.3f\n", fb, label, f, b, fb, fb / (f + b)
		}')
	fb=${line%% *}
	echo "${line#* }"
}

echo "$BACKEND backend, GPU $DEVICE: dualpipe pp $PP x ep $EP, micro $MICRO, $STEPS steps, $LAYERS layers; mean op times over all ranks"
run "overlap"
with=$fb
run "no overlap" --no-overlap
without=$fb
awk -v a="$with" -v b="$without" 'BEGIN { if (b > 0) printf "F&B overlapped / plain: %.3f\n", a / b }'
