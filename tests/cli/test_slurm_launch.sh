#!/bin/bash
# tests/cli/test_slurm_launch.sh - `launcher: slurm` for real: dpctl runs in a
# batch job on the private two-node Slurm cluster (tests/slurm/slurm-cluster.sh)
# and starts dpworker (fake mode) with srun; a failing rank is torn down with
# its exit code and root cause; `dpctl launch --submit` runs a job to the end.
# contrib/slurm/dpctl-healthcheck drains and resumes a real node.  Skips
# where Slurm, root or namespaces are missing.
set -u
cd "$(dirname "$0")/../.."
. tests/cli/tap.sh
DPCTL=$(realpath "${DPCTL:-build/dpctl}")
DPWORKER=$(realpath "${DPWORKER:-build/dpworker}")
RECIPE=$PWD/tests/fixtures/recipes/slurm-2node.yaml
id=$((200 + $$ % 50))
plan 15
trap 'tests/slurm/slurm-cluster.sh down $id >/dev/null 2>&1' EXIT
st=$(timeout 90 tests/slurm/slurm-cluster.sh up $id 2 2>/tmp/slurm-up-$id.log)
rc=$?
if [ $rc -eq 77 ]; then
	for i in $(seq 1 15); do skip_test "slurm cluster: $(tail -1 /tmp/slurm-up-$id.log)"; done
	rm -f /tmp/slurm-up-$id.log
	exit 0
fi
is "cluster comes up" "$rc" 0
[ $rc -eq 0 ] || { cat /tmp/slurm-up-$id.log; exit 1; }
rm -f /tmp/slurm-up-$id.log
export SLURM_CONF=$st/slurm.conf

# Wait (bounded) for job $1 to leave the queue; print "STATE EXITCODE".
wait_job() {
	for _ in $(seq 1 300); do
		[ -z "$(squeue -h -j "$1" 2>/dev/null)" ] && break
		sleep 0.2
	done
	scontrol show job -o "$1" | sed -n 's/.*JobState=\([A-Z]*\) .*ExitCode=\([0-9:]*\).*/\1 \2/p'
}

# A worker wrapper: shows an env value with quotes and $() arrives verbatim,
# and whether the job token is in any process's argv on this host.
cat >"$st/w.sh" <<EOW
#!/bin/sh
printf 'quote=%s\n' "\$DP_TEST_QUOTE"
printf 'token-in-argv=%s\n' "\$(ps -eo args | awk 'index(\$0, ENVIRON["DP_JOB_TOKEN"]) {n++} END {print n+0}')"
exec "$DPWORKER" "\$@"
EOW
chmod +x "$st/w.sh"

# 1. a run inside an allocation across both nodes
cat >"$st/ok.sh" <<EOJ
#!/bin/sh
"$DPCTL" launch --worker "$st/w.sh" --fake-steps 5 --heartbeat-s 0.2 "$RECIPE"
EOJ
jid=$(sbatch --parsable -N2 --ntasks-per-node=2 -o "$st/ok.out" "$st/ok.sh")
is "a launch inside the allocation succeeds" "$(wait_job "$jid")" "COMPLETED 0:0"
ok "every rank ran its 5 steps" test "$(grep -c '] step 5/5' "$st/ok.out")" -eq 4
ok "ranks ran on both nodes" bash -c "grep -q '^\[dpn1:[01]\] step' '$st/ok.out' && grep -q '^\[dpn2:[23]\] step' '$st/ok.out'"
ok "the controller reports success" grep -q '4 ranks done' "$st/ok.out"
is "quotes, \$() and backquotes reach the worker verbatim" \
	"$(grep -c 'quote=it'"'"'s \$(echo injected) `id` ; "q"$' "$st/ok.out")" 4
is "the job token is in no process's argv" "$(grep -c 'token-in-argv=0$' "$st/ok.out")" 4

# 2. a failing rank: its code, the root cause, and nothing left behind
cat >"$st/fail.sh" <<EOJ
#!/bin/sh
"$DPCTL" launch --fake-steps 100 --fake-fail 3:3:7 --heartbeat-s 0.2 --grace-s 2 "$RECIPE"
rc=\$?
sleep 0.5
echo "left=\$(ps -eo args | grep -c '^$DPWORKER')"
exit \$rc
EOJ
jid=$(sbatch --parsable -N2 --ntasks-per-node=2 -o "$st/fail.out" "$st/fail.sh")
is "a failing rank fails the job with its exit code" "$(wait_job "$jid")" "FAILED 7:0"
ok "the root cause names rank 3 on dpn2 and its status" \
	grep -q '^dpctl: error: root cause: rank 3 on dpn2 (pid [0-9]*) exited with status 7' "$st/fail.out"
ok "the other ranks were stopped before the end" bash -c "! grep -q 'step 100/100' '$st/fail.out'"
is "no dpworker is left on the nodes" "$(sed -n 's/^left=//p' "$st/fail.out"):$(ps -eo args | grep -c "^$DPWORKER")" "0:0"

# 3. --submit from outside the allocation
out=$(cd "$st" && env -u SLURM_JOB_ID "$DPCTL" -q launch --submit --time 00:05:00 --fake-steps 3 \
	--heartbeat-s 0.2 "$RECIPE")
ok "--submit prints the job id" grep -qx '[0-9][0-9]*' <<<"$out"
is "the submitted job runs to completion" "$(wait_job "$out"):$(grep -c '] step 3/3' "$st/slurm-$out.out" 2>/dev/null)" "COMPLETED 0:0:4"

# 4. the health check wrapper with the real scontrol
hc() { DPCTL=$DPCTL DP_SYSFS_ROOT=$PWD/tests/fixtures/sysfs/$1 DP_HC_NODE=dpn2 contrib/slurm/dpctl-healthcheck 2>/dev/null; }
hc gpud-h100
is "healthcheck: a failing node is drained with the reason" "$?:$(sinfo -h -R -n dpn2 -o '%E')" \
	"1:dpctl: topo validate: gpus: no GPU found"
hc twogpu
is "healthcheck: the node is resumed when it passes" "$?:$(sinfo -h -N -n dpn2 -o '%T' | tr -d '*')" "0:idle"
done_testing
