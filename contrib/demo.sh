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
