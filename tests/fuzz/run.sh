#!/bin/sh
# tests/fuzz/run.sh SECONDS SEEDDIR BIN... - run each libFuzzer target for a
# bounded time, seeded with the real topology files; fails on the first crash.
# Corpora and crash files go to build-fuzz/corpus/<target>/.
set -eu
secs=$1
seeds=$2
shift 2
for bin in "$@"; do
	name=$(basename "$bin")
	corpus=build-fuzz/corpus/$name
	mkdir -p "$corpus"
	echo "fuzz: $name for ${secs}s"
	"$bin" -max_total_time="$secs" -timeout=5 -rss_limit_mb=2048 -max_len=65536 \
		-artifact_prefix="$corpus/" -print_final_stats=1 "$corpus" "$seeds" \
		>"$corpus.log" 2>&1 || {
		echo "fuzz: $name FAILED; see $corpus.log" >&2
		tail -40 "$corpus.log" >&2
		exit 1
	}
	grep -E '^stat::number_of_executed_units|^stat::new_units_added' "$corpus.log" |
		sed "s/^/fuzz: $name /"
done
