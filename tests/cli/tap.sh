# tests/cli/tap.sh - tiny TAP helpers for the shell tests (sourced).
# Usage: plan N; ok "name" command...; is "name" "got" "want"; skip_all "why"
_tap_n=0
_tap_failed=0
plan() { echo "1..$1"; }
ok() {
	local name=$1
	shift
	_tap_n=$((_tap_n + 1))
	if "$@" >/dev/null 2>&1; then
		echo "ok $_tap_n - $name"
	else
		echo "not ok $_tap_n - $name"
		_tap_failed=1
	fi
}
is() {
	_tap_n=$((_tap_n + 1))
	if [ "$2" == "$3" ]; then
		echo "ok $_tap_n - $1"
	else
		echo "not ok $_tap_n - $1"
		echo "# got:  $2"
		echo "# want: $3"
		_tap_failed=1
	fi
}
skip_test() {
	_tap_n=$((_tap_n + 1))
	echo "ok $_tap_n # SKIP $1"
}
done_testing() { exit $_tap_failed; }
