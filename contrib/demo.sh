#!/bin/bash
# contrib/demo.sh BUILD_DIR - the `make demo` job: the best real run this
# machine can do with what is built.  Checks the embedded recipe, plans it,
# and (once the pieces exist) prints its DualPipe schedule, simulates it and
# trains the small MoE model.
set -euo pipefail
B=${1:-build}
R=recipes/local-demo.yaml
"$B/dpctl" version
echo "== dpctl recipe check $R"
"$B/dpctl" recipe check "$R"
echo "== dpctl plan $R"
"$B/dpctl" plan "$R"
echo "== dpctl schedule --algo dualpipe --pp 4 --micro 8 (the local recipe's schedule)"
"$B/dpctl" schedule --algo dualpipe --pp 4 --micro 8
echo "== dpctl simulate --algo dualpipe --pp 4 --micro 8 --F 1 --B 2 --W 1 --FB 2.5"
"$B/dpctl" simulate --algo dualpipe --pp 4 --micro 8 --F 1 --B 2 --W 1 --FB 2.5
echo "== reference training of the small MoE model (single process, 4 stages)"
"$B/dpworker" --train-reference --steps 40 --stages 4
