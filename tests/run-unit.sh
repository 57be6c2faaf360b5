#!/bin/bash
# tests/run-unit.sh - run every test program given as an argument (cmocka
# binaries in TAP mode, and tests/cli/*.sh scripts that print TAP), count the
# results and end with exactly one line "N passed, N failed, N skipped".
# A program that crashes or exits non-zero without a failing test line, or
# whose plan "1..N" is not met, counts as one more failure.
set -u
export CMOCKA_MESSAGE_OUTPUT=TAP
pass=0 fail=0 skip=0
logdir=${TMPDIR:-/tmp}/dpctl-tests.$$
mkdir -p "$logdir"
for t in "$@"; do
	name=$(basename "$t")
	log="$logdir/$name.log"
	start=$(date +%s)
	timeout "${DP_TEST_TIMEOUT:-600}" "$t" >"$log" 2>&1
	rc=$?
	p=0 f=0 s=0 plan=-1
	while IFS= read -r line; do
		case "$line" in
		"1.."*) plan=${line#1..}; plan=${plan%% *} ;;
		"not ok "*"# SKIP"* | "ok "*"# SKIP"* | "ok "*"# skip"*) s=$((s + 1)) ;;
		"not ok "*) f=$((f + 1)); echo "FAIL $name: ${line#not ok }" ;;
		"ok "*) p=$((p + 1)) ;;
		esac
	done <"$log"
	seen=$((p + f + s))
	if [ "$plan" -ge 0 ] 2>/dev/null && [ "$seen" -lt "$plan" ]; then
		echo "FAIL $name: ran $seen of $plan planned tests (crashed?)"
		f=$((f + plan - seen))
	fi
	if [ $rc -ne 0 ] && [ $f -eq 0 ]; then
		echo "FAIL $name: exit status $rc"
		f=$((f + 1))
	fi
	if [ $f -ne 0 ]; then
		echo "---- $name output (last 60 lines) ----"
		tail -n 60 "$log"
		echo "----"
	fi
	printf '%-28s %3d passed, %d failed, %d skipped (%ds)\n' "$name" $p $f $s $(($(date +%s) - start))
	pass=$((pass + p)) fail=$((fail + f)) skip=$((skip + s))
done
rm -rf "$logdir"
echo "$pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
