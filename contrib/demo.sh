#!/bin/bash
# contrib/demo.sh BUILD_DIR - the `make demo` job: the best real run this
# machine can do with what is built.  Checks the embedded recipe, plans it,
# prints its DualPipe schedule and simulated timeline, then trains the small
# MoE model with DualPipe across 4 processes (the pipeline executor, CPU
# backend) and shows the loss falling.
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
echo "== training the small MoE model with DualPipe: 4 pipeline ranks (processes), 8 micro-batches"
"$B/dpworker" --train-local --algo dualpipe --pp 4 --micro 8 --steps 40
