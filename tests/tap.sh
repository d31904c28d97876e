# tap.sh: TAP helpers sourced by the shell tests. Needs T (a scratch
# directory) whose out and err files are shown under a failing line.
n=0
failed=0

ok() {
	n=$((n + 1))
	echo "ok $n - $1"
}
not_ok() {
	n=$((n + 1))
	failed=$((failed + 1))
	echo "not ok $n - $1"
	[ -s "$T/err" ] && sed 's/^/#   stderr: /' "$T/err"
	[ -s "$T/out" ] && head -n 20 "$T/out" | sed 's/^/#   stdout: /'
}
# skip DESCRIPTION REASON: a TAP skip (counted as passed).
skip() {
	n=$((n + 1))
	echo "ok $n - $1 # SKIP $2"
}
# check DESCRIPTION COMMAND...: the command's status decides.
check() {
	d=$1
	shift
	if "$@"; then ok "$d"; else not_ok "$d"; fi
}
