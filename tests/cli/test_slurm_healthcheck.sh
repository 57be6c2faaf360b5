#!/bin/bash
# tests/cli/test_slurm_healthcheck.sh - contrib/slurm/dpctl-healthcheck
# against fake topologies (DP_SYSFS_ROOT fixtures) and a fake scontrol that
# records its calls: a failing node is drained with the failing check as
# reason, a passing node we drained is resumed, a node drained by someone
# else is left alone, a broken dpctl drains nothing.  The real scontrol is
# exercised in tests/cli/test_slurm_launch.sh.
set -u
cd "$(dirname "$0")/../.."
. tests/cli/tap.sh
DPCTL=$(realpath "${DPCTL:-build/dpctl}")
HC=contrib/slurm/dpctl-healthcheck
FIX=$PWD/tests/fixtures/sysfs
plan 9
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# fake scontrol: logs its arguments; `show node` prints $FAKE_STATE/$FAKE_REASON;
# `update` fails when $FAKE_FAIL is set
cat >"$tmp/scontrol" <<EOS
#!/bin/sh
printf '%s\n' "\$*" >>"$tmp/log"
if [ "\$1" = show ]; then
	printf '   State=%s ThreadsPerCore=1\n   Reason=%s\n' "\${FAKE_STATE:-IDLE}" "\${FAKE_REASON:-}"
	exit 0
fi
[ -z "\${FAKE_FAIL:-}" ]
EOS
chmod +x "$tmp/scontrol"
hc() {
	: >"$tmp/log"
	DPCTL=$DPCTL SCONTROL=$tmp/scontrol DP_HC_NODE=gpu017 "$@" "$HC" 2>"$tmp/err"
}

DP_SYSFS_ROOT=$FIX/gpud-h100 hc env
is "a failing node: exit 1" "$?" 1
is "it is drained with the failing check as reason" "$(grep update "$tmp/log")" \
	"update NodeName=gpu017 State=DRAIN Reason=dpctl: topo validate: gpus: no GPU found"
ok "and it says so on stderr" grep -q "drained gpu017" "$tmp/err"

DP_SYSFS_ROOT=$FIX/twogpu hc env
is "a passing node: exit 0" "$?" 0
is "a passing node that is not drained: no update" "$(grep -c update "$tmp/log")" 0

DP_SYSFS_ROOT=$FIX/twogpu hc env FAKE_STATE=IDLE+DRAIN \
	FAKE_REASON='dpctl: topo validate: gpus: no GPU found [root@2026-01-01T00:00:00]'
is "a node we drained is resumed when it passes" "$(grep update "$tmp/log")" \
	"update NodeName=gpu017 State=RESUME"

DP_SYSFS_ROOT=$FIX/twogpu hc env FAKE_STATE=IDLE+DRAIN FAKE_REASON='disk swap [admin]'
is "a node drained by someone else stays drained" "$(grep -c update "$tmp/log")" 0

: >"$tmp/log"
DPCTL=/nonexistent/dpctl SCONTROL=$tmp/scontrol DP_HC_NODE=gpu017 "$HC" 2>"$tmp/err"
is "a broken dpctl drains nothing and exits 0" "$?:$(grep -c update "$tmp/log")" "0:0"

DP_SYSFS_ROOT=$FIX/gpud-h100 hc env FAKE_FAIL=1
is "failing to drain: exit 2" "$?" 2
done_testing
