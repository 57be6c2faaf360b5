#!/bin/bash
# tests/cli/test_dpctl.sh - the installed binaries as a user runs them: exit
# codes, help, version, and `make install` into a DESTDIR.
set -u
cd "$(dirname "$0")/../.."
. tests/cli/tap.sh
DPCTL=${DPCTL:-build/dpctl}
DPWORKER=${DPWORKER:-build/dpworker}
plan 11

"$DPCTL" >/dev/null 2>&1
is "no command exits 64 (EX_USAGE)" "$?" 64
"$DPCTL" nosuch >/dev/null 2>&1
is "unknown command exits 64" "$?" 64
out=$("$DPCTL" --version)
is "--version names the version" "${out%%$'\n'*}" "dpctl $(sed -n 's/^VERSION *:= *//p' GNUmakefile)"
ok "every command answers --help with exit 0" bash -c "for c in \$($DPCTL --help | awk '/^Commands:/{f=1;next} f&&/^  [a-z]/{print \$1}'); do $DPCTL \$c --help | grep -q '^usage: dpctl' || exit 1; done"
err=$(NO_COLOR=1 "$DPCTL" --color=auto nosuch 2>&1 >/dev/null)
is "NO_COLOR: no escape codes" "$(printf '%s' "$err" | grep -c $'\033')" 0
err=$("$DPCTL" --color=always nosuch 2>&1 >/dev/null)
ok "--color=always colours errors" grep -q $'\033\\[' <<<"$err"
"$DPWORKER" --version >/dev/null
is "dpworker --version exits 0" "$?" 0
"$DPWORKER" --bogus >/dev/null 2>&1
is "dpworker bad option exits 64" "$?" 64

dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT
ok "make install succeeds" make -s install O="$(dirname "$DPCTL")" DESTDIR="$dest" PREFIX=/usr
ok "make install puts dpctl, dpworker and libdp.a under DESTDIR" \
	test -x "$dest/usr/bin/dpctl" -a -x "$dest/usr/bin/dpworker" -a -f "$dest/usr/lib/libdp.a"
ok "make install puts the Slurm health check in sbin" test -x "$dest/usr/sbin/dpctl-healthcheck"
ok "the installed dpctl runs" "$dest/usr/bin/dpctl" version
done_testing
