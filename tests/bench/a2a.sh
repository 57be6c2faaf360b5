#!/bin/bash
# tests/bench/a2a.sh - expert all-to-all: dpctl's two-hop versus its naive
# all-to-all versus Open MPI's MPI_Alltoallv moving the same tokens (make bench).
# DeepSeek-V3-like routing (256 experts, 8 groups, top-8, <= 4 nodes per token).
#
#  1. local: forked ranks over tcp on 127.0.0.1, unpaced, then with each
#     rank's inter-node bytes paced (dpctl's --inter-mbps); MPI_Alltoallv
#     (tests/bench/mpi_a2a.c, built here with mpicc) runs on the same machine
#     with the same rank->node map but UNPACED (shared memory: it cannot be
#     paced), so only the unpaced rows compare like with like.
#  2. netns: tests/netns/netns-cluster.sh makes A2A_NETNS_NODES namespace
#     "nodes" whose links tc shapes to A2A_NETNS_RATE; dpctl runs one
#     `bench a2a --node I --peers ...` per namespace and mpirun starts its
#     ranks there (plm_rsh_agent = `ip netns exec`), so both cross the same
#     shaped links.  Skipped (exit 0, message) without root, namespaces or
#     Open MPI; everything is torn down on exit.  The tbf burst is
#     A2A_NETNS_BURST (default: 256kb from 1 Gbit/s up, else 64kb: a 64 kB
#     burst holds one 1 Gbit/s TCP stream to ~88% of the rate here).  The
#     links' MTU is A2A_NETNS_MTU (default 9000, the jumbo frames of a
#     datacentre fabric; with 1500 the 2 cores of a CI machine, which also
#     run every node's kernel network stack, become the bottleneck at
#     1 Gbit/s before the links do).
# The netns part moves A2A_NETNS_TOKENS tokens per rank (default 1024).
# A2A_LOCAL=0 skips part 1, A2A_MPI=0 the MPI rows; A2A_KEEP=DIR keeps each
# node's output and the namespaces' tc and nstat counters; A2A_NETNS_CC sets
# the namespaces' default congestion control (if the kernel allows it there).  dpctl's ranks of a node talk through shm rings
# (--intra-node shm, as MPI's vader); A2A_INTRA=tcp puts them on sockets.
# Prints per phase time, algorithm bandwidth and inter-node bytes, the ratio
# MPI/two-hop time and achieved/shaped capacity.  dpctl fails if its bytes
# differ from the (token, remote node) / (token, remote rank) formula.
set -euo pipefail
DPCTL=${DPCTL:-build/dpctl}
B=$(dirname "$DPCTL")
NODES=${A2A_NODES:-2} RPN=${A2A_RPN:-4} TOKENS=${A2A_TOKENS:-512} ITERS=${A2A_ITERS:-3}
NN=${A2A_NETNS_NODES:-4} NRPN=${A2A_NETNS_RPN:-4} RATE=${A2A_NETNS_RATE:-1gbit}
NTOKENS=${A2A_NETNS_TOKENS:-1024} INTRA=${A2A_INTRA:-shm}
common=(--hidden "${A2A_HIDDEN:-1024}" --experts 256 --groups 8 --max-nodes 4 --topk 8
	--iters "$ITERS" --intra-node "$INTRA")
tmp=$(mktemp -d /tmp/dp-a2a-bench.XXXXXX)
nsid=""
cleanup() {
	if [ -n "${A2A_KEEP:-}" ]; then # keep each node's output (e.g. with DP_LOG=a2a:debug)
		mkdir -p "$A2A_KEEP"
		cp "$tmp"/node* "$A2A_KEEP"/ 2>/dev/null || true
		# and the links' tc counters (drops, overlimits) and TCP counters
		for n in $(seq 1 "$NN"); do
			[ -n "$nsid" ] || break
			ip netns exec "dp${nsid}n$n" tc -s qdisc show dev eth0 >"$A2A_KEEP/tc$n" 2>&1
			tc -s qdisc show dev "dp${nsid}h$n" >>"$A2A_KEEP/tc$n" 2>&1
			ip netns exec "dp${nsid}n$n" nstat -az >"$A2A_KEEP/nstat$n" 2>&1
		done
	fi
	if [ -n "$nsid" ]; then
		tests/netns/netns-cluster.sh down "$nsid" >/dev/null 2>&1 || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

# summary FILE MBIT_PER_LINK LINKS [BUSY_TWO_HOP_MB BUSY_NAIVE_MB]: the table
# rows of FILE (naive, two-hop, mpi-a2av) -> ratios; capacity = the time the
# inter-node bytes need at MBIT over the measured time, two ways: spread
# evenly over LINKS links (the average link), and on the busiest node link
# alone (the MB it must carry one way, from dpctl's "links:" line; naive's
# figure for MPI, which moves the same tokens).  The busiest link is the
# real bound; both are printed.
summary() {
	awk -v mbit="$2" -v links="$3" -v busy2="${4:-0}" -v busyn="${5:-0}" '
	$1 == "naive" || $1 == "two-hop" || $1 == "mpi-a2av" { d[$1] = $2; c[$1] = $3; b[$1] = $4 }
	END {
		if (d["mpi-a2av"] > 0)
			printf "ratio MPI_Alltoallv/two-hop time: dispatch %.2fx, combine %.2fx (goal >= 1.5x)\n",
				d["mpi-a2av"] / d["two-hop"], c["mpi-a2av"] / c["two-hop"]
		split("two-hop naive mpi-a2av", o, " ")
		bz["two-hop"] = busy2; bz["naive"] = busyn; bz["mpi-a2av"] = busyn
		for (k = 1; k <= 3 && mbit > 0; k++) {
			a = o[k]
			if (d[a] <= 0 || c[a] <= 0)
				continue
			need = b[a] / links / (mbit / 8) * 1e3  # ms at line rate
			printf "capacity %-8s: %.2f MB over %d x %g Mbit/s links needs %.1f ms: dispatch %.0f%%, combine %.0f%% of shaped capacity (average link; goal >= 80%% for two-hop)\n",
				a, b[a], links, mbit, need, 100 * need / d[a], 100 * need / c[a]
			if (bz[a] > 0) {
				need = bz[a] / (mbit / 8) * 1e3
				printf "capacity %-8s: busiest link %.2f MB at %g Mbit/s needs %.1f ms: dispatch %.0f%%, combine %.0f%% (busiest link)\n",
					a, bz[a], mbit, need, 100 * need / d[a], 100 * need / c[a]
			}
		}
	}' "$1"
}

have_mpi=0
if [ "${A2A_MPI:-1}" = 0 ]; then
	echo "a2a: A2A_MPI=0: MPI_Alltoallv skipped"
elif command -v mpicc >/dev/null && command -v mpirun >/dev/null; then
	mkdir -p "$B/bench"
	mpicc -O2 -Wall -Wextra -o "$B/bench/mpi_a2a" tests/bench/mpi_a2a.c && have_mpi=1
else
	echo "a2a: no mpicc/mpirun (apt-get install libopenmpi-dev openmpi-bin): MPI_Alltoallv skipped"
fi

if [ "${A2A_LOCAL:-1}" = 1 ]; then
echo "-- local, unpaced loopback (MPI_Alltoallv: shared memory)"
"$DPCTL" bench a2a --nodes "$NODES" --ranks-per-node "$RPN" --tokens "$TOKENS" "${common[@]}" \
	--counts "$tmp/counts" | tee "$tmp/local"
if [ $have_mpi = 1 ]; then
	timeout 300 mpirun --allow-run-as-root --oversubscribe -np $((NODES * RPN)) \
		"$B/bench/mpi_a2a" "$tmp/counts" "$ITERS" | tee -a "$tmp/local"
	summary "$tmp/local" 0 1
fi
echo "-- local, dpctl's inter-node bytes paced to ${A2A_MBPS:-1000} Mbit/s per rank (MPI not paced: no row)"
"$DPCTL" bench a2a --nodes "$NODES" --ranks-per-node "$RPN" --tokens "$TOKENS" "${common[@]}" \
	--inter-mbps "${A2A_MBPS:-1000}" | tee "$tmp/paced"
summary "$tmp/paced" "${A2A_MBPS:-1000}" $((NODES * RPN))
fi

echo "-- netns cluster: $NN nodes x $NRPN ranks, node links shaped to $RATE by tc"
case "$RATE" in
*gbit) mbit=$((${RATE%gbit} * 1000)) ;;
*mbit) mbit=${RATE%mbit} ;;
*) echo "a2a: A2A_NETNS_RATE must be Ngbit or Nmbit" >&2 && exit 64 ;;
esac
burst=${A2A_NETNS_BURST:-64kb}
[ -z "${A2A_NETNS_BURST:-}" ] && [ "$mbit" -ge 1000 ] && burst=256kb
mtu=${A2A_NETNS_MTU:-9000}
echo "   (tbf burst $burst latency 50ms, MTU $mtu; load average $(cut -d' ' -f1-3 /proc/loadavg) at start)"
if ! id=$(tests/netns/netns-cluster.sh free-id); then
	echo "a2a: netns part skipped (no free cluster ID in 150..239)"
	exit 0
fi
set +e
NETNS_MTU=$mtu NETNS_TC_BURST=$burst timeout 60 tests/netns/netns-cluster.sh up "$id" "$NN" "$RATE" >/dev/null
up=$?
set -e
nsid=$id # cleanup takes down whatever up made, even half of it
if [ $up = 77 ]; then
	echo "a2a: netns part skipped (netns-cluster.sh: needs root, iproute2, sshd and namespaces)"
	exit 0
fi
[ $up = 0 ] || { echo "a2a: netns-cluster.sh up failed ($up)" >&2 && exit 1; }
if [ -n "${A2A_NETNS_CC:-}" ]; then # the namespaces' default congestion control (MPI's too)
	for n in $(seq 1 "$NN"); do
		ip netns exec "dp${id}n$n" sysctl -qw net.ipv4.tcp_congestion_control="$A2A_NETNS_CC"
	done
fi
echo "   (congestion control in the namespaces: $(ip netns exec "dp${id}n1" sysctl -n net.ipv4.tcp_congestion_control); dpctl to other nodes: ${DP_A2A_TCP_CC:-cubic})"
peers=""
for r in $(seq 0 $((NN * NRPN - 1))); do
	peers="$peers${peers:+,}10.254.$id.$((r / NRPN + 1)):$((23000 + r))"
done
pids=()
for n in $(seq 0 $((NN - 1))); do
	extra=()
	[ "$n" = 0 ] && extra=(--counts "$tmp/ncounts") # one writer
	ip netns exec "dp${id}n$((n + 1))" timeout 300 "$DPCTL" bench a2a --nodes "$NN" \
		--ranks-per-node "$NRPN" --tokens "$NTOKENS" "${common[@]}" --node "$n" \
		--peers "$peers" "${extra[@]}" >"$tmp/node$n" 2>&1 &
	pids+=($!)
done
fail=0
for p in "${pids[@]}"; do wait "$p" || fail=1; done
if [ $fail = 1 ]; then
	cat "$tmp"/node*
	echo "a2a: a dpctl node failed" >&2
	exit 1
fi
head -1 "$tmp/node0"
# whole job: slowest node's time, bytes summed over nodes
awk '$1 == "naive" || $1 == "two-hop" {
		if ($2 > d[$1]) d[$1] = $2
		if ($3 > c[$1]) c[$1] = $3
		i[$1] += $4; s[$1] += $5; u[$1] += $7; seen[$1] = 1
	}
	END {
		printf "%-8s %12s %12s %14s %14s %12s %10s\n", "algo", "dispatch_ms", "combine_ms", "inter_MB", "intra_MB", "disp_GB/s", "cpu_ms"
		split("naive two-hop", o, " ")
		for (k = 1; k <= 2; k++) {
			a = o[k]
			printf "%-8s %12.2f %12.2f %14.2f %14.2f %12.3f %10.1f\n", a, d[a], c[a], i[a], s[a], (d[a] > 0 ? (i[a] + s[a]) / d[a] : 0), u[a]
		}
	}' "$tmp"/node* | tee "$tmp/netns"
if [ $have_mpi = 1 ]; then
	cat >"$tmp/agent" <<'EOF'
#!/bin/bash
# plm_rsh_agent for mpirun: "agent 10.254.ID.I cmd..." runs cmd in namespace
# dpIDnI with its own hostname, so Open MPI sees I distinct nodes
host=$1
shift
id=${host#10.254.}
id=${id%%.*}
exec ip netns exec "dp${id}n${host##*.}" unshare -u bash -c "hostname dpnode${host##*.}; $*"
EOF
	chmod +x "$tmp/agent"
	hosts=""
	for n in $(seq 1 "$NN"); do hosts="$hosts${hosts:+,}10.254.$id.$n:$NRPN"; done
	timeout 300 mpirun --allow-run-as-root --oversubscribe --mca plm_rsh_agent "$tmp/agent" \
		--host "$hosts" -np $((NN * NRPN)) --mca btl_tcp_if_include "10.254.$id.0/24" \
		--mca oob_tcp_if_include "10.254.$id.0/24" -x OMPI_ALLOW_RUN_AS_ROOT \
		-x OMPI_ALLOW_RUN_AS_ROOT_CONFIRM "$(realpath "$B/bench/mpi_a2a")" "$tmp/ncounts" \
		"$ITERS" | tee -a "$tmp/netns"
fi
busy=$(awk '$1 == "links:" { print $10, $15 }' "$tmp/node0")
echo "load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"
# shellcheck disable=SC2086 # two numbers
summary "$tmp/netns" "$mbit" "$NN" $busy
