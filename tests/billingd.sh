# billingd.sh, sourced by the demo and the shell tests: starts $B/billingd
# on a free port.
#   billingd_up CONFIGURE READY CONFIG LOG [ARGS...]   up to 10 times: picks
#   LPORT, runs CONFIGURE LPORT (which writes the port into CONFIG), starts
#   billingd -c CONFIG ARGS (stderr in LOG) and waits up to 3 s for READY
#   LPORT to succeed; a billingd that exits or never gets ready is stopped
#   and another port tried. Sets LPORT and DPID; returns 1 if none came up.
billingd_up() {
	_configure=$1 _ready=$2 _conf=$3 _log=$4
	shift 4
	for _ in $(seq 10); do
		LPORT=$((20000 + $(od -An -N2 -tu2 /dev/urandom) % 40000))
		"$_configure" "$LPORT"
		"$B/billingd" -c "$_conf" "$@" 2>"$_log" &
		DPID=$!
		for _ in $(seq 30); do
			"$_ready" "$LPORT" && return 0
			kill -0 "$DPID" 2>/dev/null || break
			sleep 0.1
		done
		kill "$DPID" 2>/dev/null
		wait "$DPID" 2>/dev/null
		DPID=
	done
	return 1
}
