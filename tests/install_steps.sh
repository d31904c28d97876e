#!/bin/bash
# make check-install-steps (as root): README's "Running it for real", run
# line by line as written, from a clone of this checkout's HEAD, on this
# machine but in private mount and network namespaces: /etc, /usr/local and
# PostgreSQL's directories are copies, so the host keeps no user, no file and
# no server from it. What cannot happen without systemd as PID 1 or a person
# is played by shell functions named like the commands: `editor` leaves the
# example configuration as is and writes a key; `systemctl ... enable --now
# billingd` runs the installed unit's ExecStart as its User= and waits for
# READY=1 on a NOTIFY_SOCKET; `journalctl` prints what billingd logged.
# Ends with "install steps: ok" or the failing line.
set -euo pipefail
[ "$(id -u)" -eq 0 ] || { echo "install_steps: must run as root" >&2; exit 1; }
REPO=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)

if [ "${1:-}" != --inside ]; then
	exec unshare --mount --net --propagation private --fork --kill-child=SIGKILL \
		bash "$0" --inside
fi

T=$(mktemp -d /var/tmp/install-steps.XXXXXX)
cleanup() {
	pg_ctlcluster 15 main stop >/dev/null 2>&1 || true
	umount /etc /usr/local /var/lib/postgresql /run/postgresql /var/log/postgresql 2>/dev/null || true
	rm -rf --one-file-system "$T"
}
trap cleanup EXIT
ip link set lo up
# bind DIR: DIR is a private copy from now on.
bind() {
	mkdir -p "$T/copy$1"
	cp -a "$1/." "$T/copy$1/"
	mount --bind "$T/copy$1" "$1"
}
for d in /etc /usr/local /var/lib/postgresql /run/postgresql /var/log/postgresql; do bind "$d"; done
pg_ctlcluster 15 main start

git clone -q "$REPO" "$T/src"
cd "$T/src"
sed -n '/^## Running it for real/,/^## billctl/p' README.md | sed -n 's/^    //p' >"$T/steps"
[ -s "$T/steps" ] || { echo "install_steps: no steps in README.md" >&2; exit 1; }

editor() {
	case $1 in
	*/merchant.key) printf 'TESTKEY0123456789abcdef\n' >"$1" ;;
	esac
}
systemctl() {
	case "$*" in
	daemon-reload) return 0 ;;
	"enable --now billingd") start_unit ;;
	*) echo "install_steps: systemctl $* is not played" >&2 && return 1 ;;
	esac
}
start_unit() {
	local unit=/usr/local/lib/systemd/system/billingd.service exec user
	exec=$(sed -n 's/^ExecStart=//p' "$unit")
	user=$(sed -n 's/^User=//p' "$unit")
	python3 - "$T/notify" <<'EOF' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(60)
while b"READY=1" not in s.recv(4096):
    pass
EOF
	local waiter=$!
	for _ in $(seq 100); do [ -S "$T/notify" ] && break; sleep 0.1; done
	chmod 711 "$T" && chmod 666 "$T/notify"
	# shellcheck disable=SC2086 # ExecStart's words
	(cd / && NOTIFY_SOCKET=$T/notify exec setpriv --reuid="$user" --regid="$user" \
		--init-groups $exec 2>"$T/billingd.log") &
	BILLINGD=$!
	wait "$waiter" || { echo "install_steps: no READY=1 from billingd" >&2 && return 1; }
	curl -s -o /dev/null -w 'listener: HTTP %{http_code}\n' http://127.0.0.1:8080/healthz
}
journalctl() {
	kill -TERM "$BILLINGD"
	wait "$BILLINGD" || { echo "install_steps: billingd exited $?" >&2 && return 1; }
	cat "$T/billingd.log"
}

n=0
while IFS= read -r line; do
	n=$((n + 1))
	echo "## $line"
	eval "$line" </dev/null || { echo "install_steps: step $n failed: $line" >&2; exit 1; }
done <"$T/steps"
grep -q 'event=started' "$T/billingd.log" && grep -q 'event=stopped' "$T/billingd.log"
echo "install steps: ok ($n steps)"
