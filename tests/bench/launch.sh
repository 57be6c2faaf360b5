#!/bin/bash
# tests/bench/launch.sh - launch fan-out: how long dpctl takes to start a
# trivial worker on every node of a namespace cluster and see them all exit,
# against pdsh and Open MPI's mpirun doing the same over the same ssh (make
# bench).  Results and method: docs/benchmarks.md, "Launch fan-out".
#
# tests/netns/netns-cluster.sh makes LAUNCH_NODES (16) namespace "nodes",
# each with its own sshd; LAUNCH_DELAY (e.g. 0.1ms; default none) adds a
# `tc netem delay` on the host side of every node link, so each round trip
# to a node takes that much longer.  Every tool uses the cluster's key and
# known_hosts, user root, one process per node; the worker is
# `dpworker --version` for pdsh and mpirun.  Rows (wall time from command
# start to the command's exit with status 0, best and median of LAUNCH_RUNS
# (3) runs):
#   dpctl-flat   dpctl launch --ssh: one libssh2 session per node, each rank a
#                dpworker that connects back, says hello/ready, gets start,
#                runs --fake-steps 0 and reports done (the control plane)
#   dpctl-relayK the same with DP_SSH_RELAY_WIDTH=K (LAUNCH_RELAY, 4)
#   dpctl-topo   dpctl topo validate RECIPE: `dpworker --discover --json` on
#                every node over the same ssh engine, no control plane
#   pdsh         pdsh -R ssh -f FANOUT (LAUNCH_PDSH_FANOUT, pdsh's default 32)
#   mpirun       mpirun --host ... -np N --map-by node (plm_rsh_agent ssh;
#                the remote shell sets a per-node hostname first, as Open MPI
#                needs distinct node names)
# Skipped (exit 0, message) without root, namespaces, sshd, pdsh or mpirun
# (each missing peer only drops its row); everything is torn down on exit.
set -euo pipefail
DPCTL=${DPCTL:-build/dpctl}
B=$(dirname "$DPCTL")
DPWORKER=${DPWORKER:-$B/dpworker}
DPCTL=$(realpath "$DPCTL")
DPWORKER=$(realpath "$DPWORKER")
N=${LAUNCH_NODES:-16} K=${LAUNCH_RUNS:-3} RELAY=${LAUNCH_RELAY:-4}
FANOUT=${LAUNCH_PDSH_FANOUT:-32} DELAY=${LAUNCH_DELAY:-}
tmp=$(mktemp -d /tmp/dp-launch-bench.XXXXXX)
nsid=""
cleanup() {
	if [ -n "$nsid" ]; then
		tests/netns/netns-cluster.sh down "$nsid" >/dev/null 2>&1 || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

if [ "$(id -u)" != 0 ]; then
	echo "launch: skipped (needs root for the namespace cluster)"
	exit 0
fi
if ! id=$(tests/netns/netns-cluster.sh free-id); then
	echo "launch: skipped (no free cluster ID in 150..239)"
	exit 0
fi
set +e
timeout 120 tests/netns/netns-cluster.sh up "$id" "$N" >"$tmp/up" 2>&1
up=$?
set -e
nsid=$id # cleanup takes down whatever up made, even half of it
if [ $up = 77 ]; then
	echo "launch: skipped ($(tail -1 "$tmp/up"))"
	exit 0
fi
[ $up = 0 ] || { cat "$tmp/up" >&2 && echo "launch: netns-cluster.sh up failed ($up)" >&2 && exit 1; }
st=$(tail -1 "$tmp/up")
if [ -n "$DELAY" ]; then
	for i in $(seq 1 "$N"); do
		if ! tc qdisc add dev "dp${id}h$i" root netem delay "$DELAY" 2>"$tmp/tc"; then
			echo "launch: LAUNCH_DELAY ignored: tc netem: $(head -1 "$tmp/tc") (no sch_netem?)"
			for j in $(seq 1 $((i - 1))); do tc qdisc del dev "dp${id}h$j" root; done
			DELAY=""
			break
		fi
	done
fi
hosts=$(paste -sd, "$st/nodes")
echo "   $N nodes (10.254.$id.1-$N), link delay ${DELAY:-none}, $K runs each;" \
	"$(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg) at start"

# run NAME CMD...: K timed runs; each must exit 0 (and, for the peers, print
# one line per node); records best and median
: >"$tmp/rows"
run() {
	local name=$1 t0 t1 i ms=()
	shift
	for i in $(seq 1 "$K"); do
		t0=$(date +%s%N)
		if ! timeout 120 "$@" >"$tmp/out" 2>&1; then
			cat "$tmp/out" >&2
			echo "launch: $name failed" >&2
			exit 1
		fi
		t1=$(date +%s%N)
		if [ -f "$tmp/expect" ] && [ "$(grep -c "$(cat "$tmp/expect")" "$tmp/out")" != "$N" ]; then
			cat "$tmp/out" >&2
			echo "launch: $name: not $N nodes answered" >&2
			exit 1
		fi
		ms+=("$(((t1 - t0) / 1000))")
	done
	printf '%s\n' "${ms[@]}" | sort -n | awk -v name="$name" '{ v[NR] = $1 }
		END { printf "%s %.1f %.1f\n", name, v[1] / 1000, v[int((NR + 1) / 2)] / 1000 }' |
		tee -a "$tmp/rows" >/dev/null
}

ssh_opts=(-o BatchMode=yes -o StrictHostKeyChecking=yes -o "UserKnownHostsFile=$st/known_hosts"
	-o IdentitiesOnly=yes -i "$st/id" -o User=root)
dp=(--ssh "$hosts" --ssh-identity "$st/id" --known-hosts "$st/known_hosts" --worker "$DPWORKER"
	--fake-steps 0 --fake-step-ms 0)
rm -f "$tmp/expect"
run dpctl-flat env -u DP_SSH_RELAY_WIDTH "$DPCTL" launch "${dp[@]}"
run "dpctl-relay$RELAY" env DP_SSH_RELAY_WIDTH="$RELAY" "$DPCTL" launch "${dp[@]}"
cat >"$tmp/recipe.yaml" <<EOF
cluster:
  hosts: 10.254.$id.[1-$N]
  launcher: ssh
  user: root
  identity: $st/id
  gpus: 1
model: {layers: 4, hidden: 32, experts: 4, top_k: 2}
parallel: {pp: 1, dp: $N, schedule: 1f1b}
EOF
run dpctl-topo "$DPCTL" topo validate --known-hosts "$st/known_hosts" --worker "$DPWORKER" \
	"$tmp/recipe.yaml"

"$DPWORKER" --version | head -1 >"$tmp/expect"
if command -v pdsh >/dev/null; then
	export PDSH_SSH_ARGS_APPEND="${ssh_opts[*]}"
	run pdsh pdsh -S -R ssh -l root -f "$FANOUT" -w "$hosts" "$DPWORKER" --version
	unset PDSH_SSH_ARGS_APPEND
else
	echo "launch: no pdsh (apt-get install pdsh): its row is skipped"
fi
if command -v mpirun >/dev/null; then
	cat >"$tmp/agent" <<EOF
#!/bin/bash
# plm_rsh_agent: "agent HOST cmd..." = ssh HOST, with a hostname of its own
# (the namespaces share this machine's), so Open MPI sees N distinct nodes
host=\$1
shift
exec ssh ${ssh_opts[*]} "\$host" "unshare -u sh -c 'hostname dpnode\${host##*.}; \$*'"
EOF
	chmod +x "$tmp/agent"
	run mpirun mpirun --allow-run-as-root --mca plm_rsh_agent "$tmp/agent" --host "$hosts" \
		-np "$N" --map-by node --mca oob_tcp_if_include "10.254.$id.0/24" "$DPWORKER" --version
else
	echo "launch: no mpirun (apt-get install openmpi-bin): its row is skipped"
fi

printf '%-14s %10s %10s\n' tool best_ms median_ms
awk '{ printf "%-14s %10.1f %10.1f\n", $1, $2, $3 }' "$tmp/rows"
awk '{ m[$1] = $3 } END {
	if (m["dpctl-flat"] <= 0) exit
	split("pdsh mpirun", p, " ")
	for (k = 1; k <= 2; k++)
		if (m[p[k]] > 0)
			printf "ratio %s/dpctl-flat median: %.2fx (%s/dpctl-topo: %.2fx)\n", p[k],
				m[p[k]] / m["dpctl-flat"], p[k], m[p[k]] / m["dpctl-topo"]
}' "$tmp/rows"
echo "   (dpctl-flat/relay include the control plane: each worker connects back,"
echo "    authenticates, rendezvous, start, done; pdsh only runs the command and"
echo "    collects its output; mpirun starts an orted per node, which wires up"
echo "    with mpirun and then forks the program)"
