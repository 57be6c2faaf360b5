#!/bin/bash
# tests/cli/test_man.sh - docs/man/dpctl.1: up to date with docs/dpctl/*.md
# (contrib/gen-man.sh), renders with groff and man without warnings, covers
# every command and every long option (from the sources' tables), and
# `make install` installs it with the bash completion.
set -u
cd "$(dirname "$0")/../.."
. tests/cli/tap.sh
DPCTL=${DPCTL:-build/dpctl}
page=docs/man/dpctl.1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

mapfile -t cmds < <(grep -o '&dp_cmd_[a-z_]*' launcher/cli.c | sed 's/&dp_cmd_//')
plan 6

if command -v preconv >/dev/null 2>&1; then
	contrib/gen-man.sh "$tmp/dpctl.1" >/dev/null 2>&1
	ok "$page is up to date (run contrib/gen-man.sh)" cmp -s "$tmp/dpctl.1" "$page"
else
	skip_test "preconv (groff-base) not installed"
fi

if command -v groff >/dev/null 2>&1; then
	warn=$(groff -man -Tutf8 -ww -z "$page" 2>&1)
	is "groff -man -ww renders it without warnings" "$warn" ""
else
	skip_test "groff not installed"
fi

if command -v man >/dev/null 2>&1; then
	MANWIDTH=80 LC_ALL=C.UTF-8 man --warnings -l "$page" >"$tmp/out" 2>"$tmp/err"
	rc=$?
	is "man -l renders it without warnings" "$rc:$(cat "$tmp/err")" "0:"
elif command -v groff >/dev/null 2>&1; then
	groff -man -Tutf8 "$page" 2>/dev/null | sed 's/.\x08//g' >"$tmp/out"
	skip_test "man not installed (groff used for the text)"
else
	skip_test "neither man nor groff installed"
	: >"$tmp/out"
fi

if [ -s "$tmp/out" ]; then
	# sections, then a heading "dpctl CMD" per command of the table
	missing=""
	for s in NAME SYNOPSIS DESCRIPTION "GLOBAL OPTIONS" "EXIT STATUS" COMMANDS; do
		grep -qx "$s" "$tmp/out" || missing="$missing $s"
	done
	for c in "${cmds[@]}"; do
		grep -qx "   dpctl $c" "$tmp/out" || missing="$missing $c"
	done
	is "the page has its sections and every command" "${missing# }" ""
	missing=""
	for f in launcher/cli.c launcher/cmd_*.c; do
		for o in $(grep -o '{ "[A-Za-z0-9][A-Za-z0-9-]*", [a-z_]*_argument' "$f" | sed 's/{ "\([^"]*\)".*/\1/'); do
			grep -q -- "--$o\b" "$tmp/out" || missing="$missing $f:--$o"
		done
	done
	is "every long option appears" "${missing# }" ""
else
	skip_test "no rendered text"
	skip_test "no rendered text"
fi

dest=$tmp/dest
make -s install O="$(dirname "$DPCTL")" DESTDIR="$dest" PREFIX=/usr >/dev/null 2>&1
ok "make install installs the man page and the bash completion" \
	test -f "$dest/usr/share/man/man1/dpctl.1" -a \
	-f "$dest/usr/share/bash-completion/completions/dpctl"
done_testing
