#!/bin/bash
# tests/slurm/slurm-cluster.sh - a private, throw-away Slurm cluster for the
# Slurm launcher tests: munged, slurmctld and one slurmd per node, each node a
# network namespace made by tests/netns/netns-cluster.sh (so every slurmd is
# a separate host to Slurm).  Nothing system-wide is touched: every daemon
# uses files under the state directory, and clients find it through SLURM_CONF.
#
#   slurm-cluster.sh up   ID N    prints the state directory; source its env file
#   slurm-cluster.sh down ID
#
# ProctrackType=proctrack/linuxproc and TaskPlugin=task/none: no cgroups needed.
# Exits 77 (skip) where root, the Slurm daemons or namespaces are missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cmd=${1:?usage: up|down ID [N]}
id=${2:?ID}
n=${3:-2}
st=/tmp/dpslurm-$id

skip() {
	echo "slurm-cluster: skip: $*" >&2
	exit 77
}

down() {
	if [ -d "$st" ]; then
		for p in "$st"/*.pid; do
			[ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null || true
		done
		sleep 0.2
		for p in "$st"/*.pid; do
			[ -f "$p" ] && kill -9 "$(cat "$p")" 2>/dev/null || true
		done
	fi
	"$here/../netns/netns-cluster.sh" down "$id" || true
	rm -rf "$st"
}

case "$cmd" in
down)
	down
	exit 0
	;;
up) ;;
*)
	echo "usage: $0 up|down ID [N]" >&2
	exit 64
	;;
esac

[ "$(id -u)" = 0 ] || skip "needs root"
for b in munged slurmctld slurmd; do
	[ -x "/usr/sbin/$b" ] || skip "needs /usr/sbin/$b (apt-get install slurmctld slurmd munge)"
done
down
rc=0
netst=$("$here/../netns/netns-cluster.sh" up "$id" "$n") || rc=$?
[ $rc -eq 0 ] || exit $rc
mkdir -p "$st"/{spool,state,log}
ctl_ip=10.254.$id.254

# munge with a private key and socket
dd if=/dev/urandom of="$st/munge.key" bs=1024 count=1 status=none
chmod 400 "$st/munge.key"
/usr/sbin/munged --force --key-file="$st/munge.key" --socket="$st/munge.socket" \
	--pid-file="$st/munged.pid" --log-file="$st/log/munged.log" --seed-file="$st/munge.seed"

nodes=""
for i in $(seq 1 "$n"); do
	nodes="$nodes
NodeName=dpn$i NodeAddr=10.254.$id.$i NodeHostname=dpn$i CPUs=2 RealMemory=1000 State=UNKNOWN"
done
cat >"$st/slurm.conf" <<EOC
ClusterName=dptest$id
SlurmctldHost=$(hostname -s)($ctl_ip)
SlurmctldPort=$((6817 + id * 2))
SlurmdPort=$((6818 + id * 2))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$st/munge.socket
CredType=cred/munge
StateSaveLocation=$st/state
SlurmdSpoolDir=$st/spool/%n
SlurmctldPidFile=$st/slurmctld.pid
SlurmdPidFile=$st/slurmd-%n.pid
SlurmctldLogFile=$st/log/slurmctld.log
SlurmdLogFile=$st/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
$nodes
PartitionName=dp Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOC
cat >"$st/env" <<EOC
export SLURM_CONF=$st/slurm.conf
EOC
export SLURM_CONF=$st/slurm.conf
/usr/sbin/slurmctld -f "$st/slurm.conf"
for i in $(seq 1 "$n"); do
	mkdir -p "$st/spool/dpn$i"
	# nsenter --net, not `ip netns exec`: the latter remounts /sys and
	# hides the cgroup tree that slurmd 22.05 insists on reading
	nsenter --net="/run/netns/dp${id}n$i" /usr/sbin/slurmd -f "$st/slurm.conf" -N "dpn$i"
done
# wait until every node is idle
for _ in $(seq 1 150); do
	idle=$(sinfo -h -N -o '%T' 2>/dev/null | grep -c '^idle' || true)
	[ "$idle" -eq "$n" ] && break
	sleep 0.2
done
if [ "$idle" -ne "$n" ]; then
	echo "slurm-cluster: nodes did not come up:" >&2
	sinfo -N >&2 || true
	tail -5 "$st"/log/*.log >&2 || true
	exit 1
fi
echo "$st"
