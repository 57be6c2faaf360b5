#!/bin/bash
# contrib/demo.sh BUILD_DIR - the `make demo` job: the best real run this
# machine can do with what is built.  Checks the embedded recipe, plans it,
# prints its DualPipe schedule and simulated timeline, then trains the small
# MoE model with `dpctl launch recipes/local-demo.yaml`: 8 dpworker ranks
# (DualPipe pp 4 x expert-parallel 2: the MoE all-to-all between the two EP
# ranks of each stage) joined through the controller, 300 steps, the loss
# falling, and
# at the end a summary (loss first -> last, tokens/s, measured vs simulated
# bubble per rank) and the paths of the merged trace.json and timeline.svg
# (measured lanes per rank over the simulated schedule).
set -euo pipefail
B=${1:-build}
R=recipes/local-demo.yaml
RUN=${DEMO_RUN_DIR:-${TMPDIR:-/tmp}/dpctl-demo/run}
"$B/dpctl" version
echo "== dpctl recipe check $R"
"$B/dpctl" recipe check "$R"
echo "== dpctl plan $R"
"$B/dpctl" plan "$R"
echo "== dpctl schedule --algo dualpipe --pp 4 --micro 8 (the local recipe's schedule)"
"$B/dpctl" schedule --algo dualpipe --pp 4 --micro 8
echo "== dpctl simulate --algo dualpipe --pp 4 --micro 8 --F 1 --B 2 --W 1 --FB 2.5"
"$B/dpctl" simulate --algo dualpipe --pp 4 --micro 8 --F 1 --B 2 --W 1 --FB 2.5
echo "== dpctl launch $R: the small MoE model, DualPipe pp 4 x EP 2 (8 processes), 8 micro-batches"
rm -rf "$RUN" # a fresh run directory each time (logs and events are appended)
DPWORKER="$B/dpworker" "$B/dpctl" launch --run-dir "$RUN" "$R"
echo "== dpctl report $RUN: one HTML page (timeline, loss curve, bubble, events)"
"$B/dpctl" report "$RUN"
echo "== open $RUN/trace.json in chrome://tracing or https://ui.perfetto.dev"
echo "== open $RUN/timeline.svg in a browser: measured op lanes per rank over the simulated schedule"
