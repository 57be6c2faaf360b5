#!/bin/bash
# tests/cli/test_slurm_cluster.sh - the private Slurm cluster the Slurm
# launcher tests run on (tests/slurm/slurm-cluster.sh): two slurmd nodes in
# network namespaces, srun across them, sbatch --wait.  Skips where Slurm,
# root or namespaces are missing.
set -u
cd "$(dirname "$0")/../.."
. tests/cli/tap.sh
id=$((100 + $$ % 100))
plan 4
trap 'tests/slurm/slurm-cluster.sh down $id >/dev/null 2>&1' EXIT
st=$(timeout 90 tests/slurm/slurm-cluster.sh up $id 2 2>/tmp/slurm-up-$id.log)
rc=$?
if [ $rc -eq 77 ]; then
	for i in 1 2 3 4; do skip_test "slurm cluster: $(tail -1 /tmp/slurm-up-$id.log)"; done
	rm -f /tmp/slurm-up-$id.log
	exit 0
fi
is "cluster comes up" "$rc" 0
[ $rc -eq 0 ] || { cat /tmp/slurm-up-$id.log; exit 1; }
rm -f /tmp/slurm-up-$id.log
export SLURM_CONF=$st/slurm.conf
out=$(timeout 60 srun -N2 -n2 bash -c 'echo $SLURM_NODEID $(ip -o -4 addr show dev eth0 | cut -d" " -f7)' | sort)
is "srun runs one task on each namespace node" "$out" "0 10.254.$id.1/24
1 10.254.$id.2/24"
printf '#!/bin/sh\nsrun -N2 -n2 hostname -I\n' >"$st/job.sh"
jid=$(timeout 60 sbatch --parsable --wait -N2 -o "$st/job.out" "$st/job.sh")
is "sbatch --wait succeeds" "$?" 0
is "the batch job ran on both nodes" "$(sort "$st/job.out" | tr -d ' ' | tr '\n' ' ')" "10.254.$id.1 10.254.$id.2 "
done_testing
