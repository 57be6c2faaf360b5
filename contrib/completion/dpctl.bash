# contrib/completion/dpctl.bash - bash completion for dpctl.
#
# Install as $datadir/bash-completion/completions/dpctl (`make install` does),
# or source it from ~/.bashrc.  It completes the global options, commands,
# subcommands (recipe check, topo discover|show|validate, hostlist
# expand|compress, ...), every command's options, option values listed in
# the help text (--color=auto|always|never, --algo dualpipe|...) and file
# names for FILE/RECIPE arguments.
#
# Everything is read from dpctl's own help output (`dpctl --help`, `dpctl
# CMD --help`, which print the command table and each command's getopt
# options), cached once per shell, so the completion follows the binary
# being completed - ./build/dpctl as well as the installed one - and never
# goes stale.  tests/cli/test_completion.sh checks it against the option
# tables in launcher/cmd_*.c.  Needs bash >= 4.2; bash-completion is optional.

declare -gA _dpctl_help_cache

# _dpctl_help PROG [CMD]: the help text of dpctl or of one command in
# REPLY, cached.  Call it in the completing shell itself, not in $(...): a
# subshell's cache entries are lost.
_dpctl_help()
{
	local key="$1|${2-}"
	if [[ -z ${_dpctl_help_cache[$key]+set} ]]; then
		if [[ -n ${2-} ]]; then
			_dpctl_help_cache[$key]=$("$1" "$2" --help 2>/dev/null)
		else
			_dpctl_help_cache[$key]=$("$1" --help 2>/dev/null)
		fi
	fi
	REPLY=${_dpctl_help_cache[$key]}
}

# Command names: the "Commands:" section of `dpctl --help`.
_dpctl_commands()
{
	_dpctl_help "$1"
	printf '%s\n' "$REPLY" | awk '/^Commands:/ { on = 1; next } on && /^  [a-z]/ { print $1 } on && /^$/ { on = 0 }'
}

# Subcommands: words after "dpctl CMD" on the usage lines, e.g. "check".
_dpctl_subcommands()
{
	_dpctl_help "$1" "$2"
	printf '%s\n' "$REPLY" | awk -v cmd="$2" '
		/^(usage: |       )dpctl / {
			sub(/^usage: /, ""); sub(/^ +/, "")
			if ($2 == cmd && $3 ~ /^[a-z][a-z0-9-]*$/) print $3
		}' | sort -u
}

# Option lines of a help text as "NAME ARG" (ARG "" for a flag, "=WHEN" for
# --opt=WHEN), one per line.
_dpctl_options()
{
	awk '/^ +(-[A-Za-z0-9], )?--[A-Za-z0-9][A-Za-z0-9-]*/ {
		s = $0; sub(/^ +(-[A-Za-z0-9], )?/, "", s)
		name = s; sub(/[ =].*/, "", name)
		rest = substr(s, length(name) + 1)
		arg = ""
		if (rest ~ /^=[^ ]+/) { arg = rest; sub(/ .*/, "", arg) }
		else if (rest ~ /^ [^ ]/) { arg = substr(rest, 2); sub(/ .*/, "", arg) }
		print name, arg
	}'
}

# Values an option lists in its description ("auto, always, never",
# "dualpipe, dualpipev, 1f1b or zb1p"), one per line.
_dpctl_values()
{
	awk -v opt="$1" '
		{ s = $0; sub(/^ +(-[A-Za-z0-9], )?/, "", s) }
		index(s, opt " ") == 1 || index(s, opt "=") == 1 {
			d = s; sub(/^[^ ]+( [^ ]+)? +/, "", d)
			if (index(d, ": ")) d = substr(d, index(d, ": ") + 2)
			if (match(d, /^[a-z0-9]+(, [a-z0-9]+)+(,? or [a-z0-9]+)?/) ||
			    match(d, /^[a-z0-9]+ or [a-z0-9]+/)) {
				d = substr(d, 1, RLENGTH); gsub(/,? or /, ", ", d)
				n = split(d, v, ", "); for (i = 1; i <= n; i++) print v[i]
			}
			exit
		}'
}

# Complete the value of option $3 (help text of its command in $2) for word $4.
_dpctl_complete_value()
{
	local prog=$1 help=$2 opt=$3 cur=$4 arg values
	arg=$(printf '%s\n' "$help" | _dpctl_options | awk -v o="$opt" '$1 == o { print $2 }')
	if [[ $opt == --log ]]; then
		values="error warn info debug"
	else
		values=$(printf '%s\n' "$help" | _dpctl_values "$opt")
	fi
	if [[ -n $values ]]; then
		mapfile -t COMPREPLY < <(compgen -W "$values" -- "$cur")
	elif [[ $arg == *FILE* || $arg == *RECIPE* || $arg == *DIR* ]]; then
		compopt -o filenames 2>/dev/null
		mapfile -t COMPREPLY < <(compgen -f -- "$cur")
	else
		COMPREPLY=()
	fi
}

_dpctl()
{
	local prog=${COMP_WORDS[0]} cur=${COMP_WORDS[COMP_CWORD]}
	local prev=${COMP_WORDS[COMP_CWORD-1]-} i w cmd="" cmd_i=0 sub="" help opts
	local -a words
	local REPLY

	prog=${prog/#\~/$HOME}
	type -P "$prog" >/dev/null 2>&1 || [[ -x $prog ]] || return 0

	# the command: the first word after the global options
	for ((i = 1; i < COMP_CWORD; i++)); do
		w=${COMP_WORDS[i]}
		if [[ $w == --color || $w == --log ]]; then
			# "--color always", or "--color = always" when '=' breaks words
			if [[ ${COMP_WORDS[i+1]-} == = ]]; then
				((i += 2))
			else
				((i += 1))
			fi
		elif [[ $w != -* ]]; then
			cmd=$w cmd_i=$i
			break
		fi
	done
	_dpctl_help "$prog" # fills the cache in this shell
	if [[ -n $cmd ]]; then
		_dpctl_help "$prog" "$cmd"
		help=$REPLY
		for ((i = cmd_i + 1; i < COMP_CWORD; i++)); do
			w=${COMP_WORDS[i]}
			if [[ $w != -* && $w != = ]]; then
				sub=$w
				break
			fi
		done
	else
		help=$REPLY
	fi

	# option values: "--opt=val" (with or without '=' in COMP_WORDBREAKS) and "--opt val"
	if [[ $cur == = && $prev == --* ]]; then
		_dpctl_complete_value "$prog" "$help" "$prev" ""
		return 0
	elif [[ $prev == = && $COMP_CWORD -ge 2 && ${COMP_WORDS[COMP_CWORD-2]} == --* ]]; then
		_dpctl_complete_value "$prog" "$help" "${COMP_WORDS[COMP_CWORD-2]}" "$cur"
		return 0
	elif [[ $cur == --*=* ]]; then
		_dpctl_complete_value "$prog" "$help" "${cur%%=*}" "${cur#*=}"
		COMPREPLY=("${COMPREPLY[@]/#/${cur%%=*}=}")
		return 0
	elif [[ $prev == --* ]] &&
		printf '%s\n' "$help" | _dpctl_options | awk -v o="$prev" '$1 == o && $2 != "" { f = 1 } END { exit !f }'; then
		_dpctl_complete_value "$prog" "$help" "$prev" "$cur"
		return 0
	fi

	if [[ $cur == -* ]]; then
		opts=$(printf '%s\n' "$help" | _dpctl_options | awk '{ print $1 ($2 ~ /^=/ ? "=" : "") }')
		mapfile -t COMPREPLY < <(compgen -W "$opts" -- "$cur")
		[[ ${#COMPREPLY[@]} -eq 1 && ${COMPREPLY[0]} == *= ]] && compopt -o nospace 2>/dev/null
		return 0
	fi
	if [[ -z $cmd ]]; then
		mapfile -t COMPREPLY < <(compgen -W "$(_dpctl_commands "$prog")" -- "$cur")
		return 0
	fi
	if [[ $cmd == help ]]; then
		[[ -z $sub ]] && mapfile -t COMPREPLY < <(compgen -W "$(_dpctl_commands "$prog")" -- "$cur")
		return 0
	fi
	words=($(_dpctl_subcommands "$prog" "$cmd"))
	if [[ ${#words[@]} -gt 0 && -z $sub ]]; then
		mapfile -t COMPREPLY < <(compgen -W "${words[*]}" -- "$cur")
		return 0
	fi
	# operands: recipes, topology files, host lists - offer file names
	compopt -o filenames 2>/dev/null
	mapfile -t COMPREPLY < <(compgen -f -- "$cur")
	return 0
}

complete -F _dpctl dpctl
