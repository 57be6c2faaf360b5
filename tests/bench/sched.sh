#!/bin/bash
# tests/bench/sched.sh - pipeline schedules: simulated bubble of DualPipe
# against 1F1B (and ZB1P) for the same PP stages, and the time to generate
# and simulate pp=64, micro=1024 for all four algorithms.  Run by `make bench`
# (DPCTL = the dpctl binary).
set -euo pipefail
DPCTL=${DPCTL:-build/dpctl}

ms() { echo $(($(date +%s%N) / 1000000)); }

echo "simulated max bubble, F=1 B=2 W=1 F&B=2.5, micro = 4*PP (README regime)"
printf '%4s %8s %8s %9s %10s %16s\n' PP 1f1b zb1p dualpipe dualpipev "dualpipe/1f1b"
for pp in 4 8 16 32 64; do
	out=$("$DPCTL" simulate --compare --pp "$pp" --micro $((4 * pp)))
	b() { awk -v a="$1" '$1 == a { print $4 }' <<<"$out"; }
	printf '%4d %8s %8s %9s %10s %16s\n' "$pp" "$(b 1f1b)" "$(b zb1p)" "$(b dualpipe)" \
		"$(b dualpipev)" "$(awk -v x="$(b dualpipe)" -v y="$(b 1f1b)" 'BEGIN { printf "%.3f", x / y }')"
done

echo
echo "pp=64 micro=1024: generate (+ print) and simulate, wall time incl. ~process start"
t0=$(ms)
"$DPCTL" version >/dev/null
start=$(($(ms) - t0))
echo "process start: ${start} ms"
printf '%-10s %8s %12s %12s %14s\n' algo ops schedule_ms simulate_ms ns_per_op
for a in dualpipe dualpipev 1f1b zb1p; do
	n=$("$DPCTL" schedule --algo "$a" --pp 64 --micro 1024 --format long | wc -l)
	t0=$(ms)
	"$DPCTL" schedule --algo "$a" --pp 64 --micro 1024 >/dev/null
	t1=$(ms)
	"$DPCTL" simulate --algo "$a" --pp 64 --micro 1024 >/dev/null
	t2=$(ms)
	g=$((t1 - t0 - start))
	s=$((t2 - t1 - start))
	((g < 0)) && g=0
	((s < 0)) && s=0
	printf '%-10s %8d %12d %12d %14d\n' "$a" "$n" "$g" "$s" $(((g + s) * 1000000 / n))
done
