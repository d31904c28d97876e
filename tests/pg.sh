#!/bin/sh
# A throwaway PostgreSQL for tests, benchmarks and the demo.
#   eval "$(sh tests/pg.sh start)"   initdb in a new temporary folder, start the
#                                    server on a free loopback port, print exports
#   sh tests/pg.sh stop "$PGTMP"     stop it and remove the folder
#   sh tests/pg.sh restart "$PGTMP"  restart it (tests of reconnection)
# initdb refuses to run as root, so as root the cluster belongs to the
# unprivileged "postgres" user (created if missing).
set -e
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$bindir/initdb" ] || { echo "pg.sh: PostgreSQL server not installed (run make deps)" >&2; exit 1; }

as_owner() {
	if [ "$(id -u)" -eq 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

case "$1" in
start)
	if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
		useradd --system --no-create-home postgres
	fi
	dir=$(mktemp -d /tmp/billing-pg.XXXXXX)
	chmod 755 "$dir"
	[ "$(id -u)" -eq 0 ] && chown postgres "$dir"
	echo billing > "$dir/pw"
	as_owner "$bindir/initdb" -D "$dir/data" -U billing --pwfile="$dir/pw" \
		--auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 --no-sync >"$dir/initdb.log" 2>&1 ||
		{ cat "$dir/initdb.log" >&2; exit 1; }
	cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 256MB
log_min_messages = warning
CONF
	tries=0
	while :; do
		port=$(( 20000 + $(od -An -N2 -tu2 /dev/urandom) % 40000 ))
		if as_owner "$bindir/pg_ctl" -D "$dir/data" -o "-p $port" -l "$dir/server.log" -w -t 30 start >/dev/null 2>&1; then
			break
		fi
		tries=$((tries + 1))
		[ $tries -ge 10 ] && { cat "$dir/server.log" >&2; exit 1; }
	done
	echo "$port" > "$dir/port"
	as_owner "$bindir/createdb" -h "$dir" -p "$port" -U billing billing
	echo "export PGTMP='$dir' PGHOST=127.0.0.1 PGPORT=$port PGUSER=billing PGPASSWORD=billing PGDATABASE=billing"
	echo "export DATABASE_URL='postgresql://billing:billing@127.0.0.1:$port/billing'"
	echo "export PG_BINDIR='$bindir'"
	;;
stop)
	[ -d "$2/data" ] || exit 0
	as_owner "$bindir/pg_ctl" -D "$2/data" -m immediate stop >/dev/null 2>&1 || true
	rm -rf "$2"
	;;
restart)
	port=$(cat "$2/port")
	as_owner "$bindir/pg_ctl" -D "$2/data" -m fast stop >/dev/null
	sleep "${3:-0}"
	as_owner "$bindir/pg_ctl" -D "$2/data" -o "-p $port" -l "$2/server.log" -w -t 30 start >/dev/null
	;;
*)
	echo "usage: pg.sh start | stop DIR | restart DIR [PAUSE]" >&2
	exit 2
	;;
esac
