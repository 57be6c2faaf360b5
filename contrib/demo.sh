#!/bin/bash
# contrib/demo.sh BUILD_DIR - the `make demo` job: the best real run this
# machine can do.  Checks the embedded recipe, prints its DualPipe schedule
# and simulated timeline.  (Becomes the training demo when the executor lands.)
set -euo pipefail
B=${1:-build}
R=recipes/local-demo.yaml
"$B/dpctl" version
if [ -f "$R" ]; then
	echo "== dpctl recipe check $R"
	"$B/dpctl" recipe check "$R"
fi
