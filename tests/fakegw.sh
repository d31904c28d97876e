# fakegw.sh, sourced by the demo and the benchmark: starts $B/fakegw.
#   fakegw_start DIR ARGS...   runs it with ARGS on an ephemeral port, its
#   output in DIR/fakegw.out|err; sets GWPID and FAKE (its base URL without
#   /v2). Returns 1 with the reason on stderr if it does not come up in 5 s.
fakegw_start() {
	_dir=$1
	shift
	"$B/fakegw" --port 0 "$@" >"$_dir/fakegw.out" 2>"$_dir/fakegw.err" &
	GWPID=$!
	for _ in $(seq 50); do
		grep -q '^port=' "$_dir/fakegw.out" 2>/dev/null && break
		sleep 0.1
	done
	_port=$(sed -n 's/^port=//p' "$_dir/fakegw.out")
	if [ -z "$_port" ]; then
		echo "fakegw did not start: $(cat "$_dir/fakegw.err")" >&2
		return 1
	fi
	FAKE=http://127.0.0.1:$_port
}
