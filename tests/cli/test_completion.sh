#!/bin/bash
# tests/cli/test_completion.sh - contrib/completion/dpctl.bash completes every
# command, subcommand and long option.  The expected lists come from the
# sources, not from dpctl's help (which the completion itself reads): the
# command table in launcher/cli.c, the getopt_long tables in
# launcher/cmd_*.c and cli.c, and the subcommands in docs/dpctl/dpctl.md.
set -u
cd "$(dirname "$0")/../.."
. tests/cli/tap.sh
DPCTL=${DPCTL:-build/dpctl}
DPCTL=$(cd "$(dirname "$DPCTL")" && pwd)/$(basename "$DPCTL")

if ((BASH_VERSINFO[0] < 4 || (BASH_VERSINFO[0] == 4 && BASH_VERSINFO[1] < 2))); then
	echo "1..0 # SKIP bash $BASH_VERSION is older than 4.2"
	exit 0
fi

# long options of a getopt_long table in a C file
c_options() { grep -o '{ "[A-Za-z0-9][A-Za-z0-9-]*", [a-z_]*_argument' "$1" | sed 's/{ "\([^"]*\)".*/\1/'; }

mapfile -t cmds < <(grep -o '&dp_cmd_[a-z_]*' launcher/cli.c | sed 's/&dp_cmd_//')
# "| `topo discover\|show\|validate` |" -> "topo discover show validate"
mapfile -t subs < <(sed -n 's/^| `\([a-z]*\) \([a-z|\\]*\)` |.*/\1 \2/p' docs/dpctl/dpctl.md | sed 's/\\|/ /g')

plan $((4 + ${#cmds[@]} + ${#subs[@]} + 4))

# Run the completion function as bash would for the words given (the last
# one is being completed) and print the candidates, one per line.  The
# completion is loaded into this shell, so its help cache is shared.
. contrib/completion/dpctl.bash
PATH=$(dirname "$DPCTL"):$PATH
complete_words() {
	local COMP_WORDS=("$@") COMP_CWORD=$(($# - 1)) COMP_LINE="$*" COMP_POINT
	COMP_POINT=${#COMP_LINE}
	COMPREPLY=()
	_dpctl dpctl "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
	printf "%s\n" "${COMPREPLY[@]}"
}

# has WORD LIST...: WORD (or WORD=) is among the candidates
missing() {
	local want=$1 got=$2 w out=""
	for w in $want; do
		grep -qxF -e "$w" -e "$w=" <<<"$got" || out="$out $w"
	done
	printf '%s' "${out# }"
}

# in this shell (no $(...)): fills the completion's help cache for the subshells below
complete_words dpctl "" >/dev/null
for c in "${cmds[@]}"; do
	complete_words dpctl "$c" -- >/dev/null
done

is "completion registers for dpctl" "$(complete -p dpctl)" \
	"complete -F _dpctl dpctl"
ok "the command table has commands" test "${#cmds[@]}" -ge 5
is "every command is completed" "$(missing "${cmds[*]}" "$(complete_words dpctl "")")" ""
is "every global option is completed" \
	"$(missing "$(c_options launcher/cli.c | sed 's/^/--/')" "$(complete_words dpctl --)")" ""
for c in "${cmds[@]}"; do
	f=$(grep -l "const struct dp_cli_cmd dp_cmd_$c = " launcher/cmd_*.c)
	want=$(c_options "$f" | sed 's/^/--/')
	if [ -z "$want" ]; then
		is "dpctl $c: option table found" "$f" "(a file with an option table)"
		continue
	fi
	is "dpctl $c: every long option is completed" \
		"$(missing "$want" "$(complete_words dpctl "$c" --)")" ""
done
for s in "${subs[@]}"; do
	read -r c words <<<"$s"
	is "dpctl $c: subcommands $words" "$(complete_words dpctl "$c" "" | sort | xargs)" \
		"$(printf '%s\n' $words | sort | xargs)"
done
is "--color=WHEN values ('=' breaks words)" "$(complete_words dpctl --color = a | xargs)" "auto always"
is "option values from the help text" "$(complete_words dpctl schedule --algo "" | xargs)" \
	"dualpipe dualpipev 1f1b zb1p"
is "operands complete file names" "$(complete_words dpctl recipe check recipes/local-d)" \
	"recipes/local-demo.yaml"
is "help texts are cached once per command" "${#_dpctl_help_cache[@]}" "$((${#cmds[@]} + 1))"
done_testing
