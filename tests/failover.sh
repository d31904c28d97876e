#!/bin/sh
# make test-failover: PostgreSQL failovers in the middle of a billing run,
# judged only against the fake gateway's ledger. Each scenario starts a
# primary and a streaming standby (pg_basebackup) of its own, on free
# loopback ports and in a scratch directory, runs two billingd against the
# fake gateway (20 ms, ~5 % faults of every kind, duplicate charging on: a
# reused order number is charged again)
# and kills the primary with kill -9 mid-run:
#   sync     synchronous standby, promoted: nothing lost by construction;
#   async    asynchronous standby that stopped streaming seconds before the
#            kill (its last commits are lost), daemons surviving: they
#            re-insert what they sent and probe before sending;
#   killed   the same with the daemons killed too: billctl reconcile lists
#            every paid order the new primary does not know, --repair
#            records them, and the next daemons charge no period twice;
#   bouncer  the async run through PgBouncer in session pooling mode (and
#            billingd refusing transaction pooling).
# FAILOVER_N subscriptions (default 5000); FAILOVER_ONLY=name runs one.
set -u
B=${B:-build}
N=${FAILOVER_N:-5000}
KEY=FAILKEY0123456789abcdef
MCH=10000701
NOW=2026-03-01T12:00:00Z
FROM=2026-03-01 # the window is business time: NOW's day
TO=2026-03-02
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
T=$(mktemp -d /tmp/billing-failover.XXXXXX)
chmod 755 "$T"
[ "$(id -u)" -eq 0 ] && chown postgres "$T"
. tests/tap.sh
. tests/fakegw.sh

as_owner() {
	if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
free_port() {
	while :; do
		p=$((20000 + $(od -An -N2 -tu2 /dev/urandom) % 40000))
		ss -ltn "sport = :$p" 2>/dev/null | grep -q ":$p" || { echo "$p"; return; }
	done
}
PIDS=""
cleanup() {
	for p in $PIDS; do kill -9 "$p" 2>/dev/null; done
	for f in "$T"/*/pgbouncer.pid; do
		[ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null
	done
	for d in "$T"/*/*/data; do
		[ -f "$d/postmaster.pid" ] && as_owner "$bindir/pg_ctl" -D "$d" -m immediate stop >/dev/null 2>&1
	done
	[ -n "${FAILOVER_KEEP:-}" ] || rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

psql_at() { psql -X -q -At -v ON_ERROR_STOP=1 "postgresql://billing:billing@127.0.0.1:$1/billing" -c "$2"; }

# primary DIR PORT: a new cluster with the README's roles and database.
primary() {
	mkdir -p "$1"
	[ "$(id -u)" -eq 0 ] && chown postgres "$1"
	echo billing >"$1/pw"
	as_owner "$bindir/initdb" -D "$1/data" -U billing --pwfile="$1/pw" --auth-local=trust \
		--auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 --no-sync >"$1/initdb.log" 2>&1 || return 1
	cat >>"$1/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$1'
max_connections = 100
wal_level = replica
max_wal_senders = 4
hot_standby = on
fsync = off
log_min_messages = warning
CONF
	start_on "$1" "$2" || return 1
	psql_at "$PORT_USED" "SELECT 1" >/dev/null 2>&1 || as_owner "$bindir/createdb" -h "$1" -p "$PORT_USED" -U billing billing
	psql -X -q -h "$1" -p "$PORT_USED" -U billing -d billing -v ON_ERROR_STOP=1 \
		-c "CREATE ROLE billing_owner LOGIN PASSWORD 'billing'" \
		-c "CREATE ROLE billing_app NOLOGIN" \
		-c "CREATE ROLE billing_daemon LOGIN PASSWORD 'billing' IN ROLE billing_app" \
		-c "ALTER DATABASE billing OWNER TO billing_owner" >/dev/null
}

# standby DIR PRIMARY_PORT PORT: pg_basebackup of the primary, streaming.
standby() {
	mkdir -p "$1"
	[ "$(id -u)" -eq 0 ] && chown postgres "$1"
	PGPASSWORD=billing as_owner "$bindir/pg_basebackup" -h 127.0.0.1 -p "$2" -U billing \
		-D "$1/data" -R -X stream -c fast >"$1/basebackup.log" 2>&1 || return 1
	# once promoted it must not wait for a standby of its own
	cat >>"$1/data/postgresql.conf" <<CONF
unix_socket_directories = '$1'
synchronous_standby_names = ''
CONF
	start_on "$1" "$3"
}

# start_on DIR PORT: pg_ctl start on PORT; another process may take a free
# port first (the machine runs other tests), then on a new one, in PORT_USED.
start_on() {
	PORT_USED=$2
	for _ in 1 2 3 4 5; do
		as_owner "$bindir/pg_ctl" -D "$1/data" -o "-p $PORT_USED" -l "$1/server.log" -w -t 30 start >/dev/null 2>&1 &&
			return 0
		PORT_USED=$(free_port)
	done
	return 1
}

# kill9_server DIR: the postmaster and its children, at once.
kill9_server() {
	pm=$(head -n 1 "$1/data/postmaster.pid")
	kill -9 "$pm" $(ps -o pid= --ppid "$pm") 2>/dev/null
	rm -f "$1/data/postmaster.pid"
}

write_config() { # FILE URL MAX_IN_FLIGHT
	cat >"$1" <<EOF
gateway:
  base_url: $FAKE/v2
  mch_id: "$MCH"
  job_no: failover
  merchant_key_file: $T/merchant.key
  timeout_ms: 1000
  connect_timeout_ms: 500
  max_in_flight: $3
database:
  url: "$2"
billing:
  order_prefix: F
  lease_seconds: 8
  poll_interval_ms: 100
listen:
  address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
enrolment:
  return_url: http://127.0.0.1:9/iotpay/return
plans_dir: $PWD/plans
EOF
}

start_daemons() {
	for i in 1 2; do
		"$B/billingd" -c "$T/billing.yaml" --now "$NOW" 2>>"$T/$SC/billingd$i.log" &
		eval "D$i=$!"
		PIDS="$PIDS $!"
	done
}
stop_daemons() { # SIGNAL
	kill "-$1" "$D1" "$D2" 2>/dev/null
	wait "$D1" "$D2" 2>/dev/null
}

# The fake's pay orders as "mchOrderNo payOrderId amount customerId" lines.
gw_orders() {
	curl -sf "$FAKE/_fake/ledger" |
		jq -r '.orders[] | select(.payType == "pay") | "\(.mchOrderNo) \(.payOrderId) \(.amount) \(.customerId)"' |
		sort
}

# wait_for PORT SQL VALUE SECONDS: until the query answers VALUE.
wait_for() {
	i=0
	while [ "$(psql_at "$1" "$2" 2>/dev/null)" != "$3" ]; do
		i=$((i + 1))
		[ $i -ge $(($4 * 5)) ] && return 1
		sleep 0.2
	done
}

# verify PORT: each subscription charged once, no order twice at the
# gateway, and our succeeded charges equal the gateway's orders.
verify() {
	gw_orders >"$T/$SC/gw"
	psql_at "$1" "SELECT c.mch_order_no || ' ' || c.pay_order_id || ' ' || c.amount_cents || ' ' || c.customer_id
	              FROM charges c WHERE state = 'succeeded' ORDER BY 1" | sort >"$T/$SC/ours"
	check "$SC: $N orders at the gateway, one per subscription" \
		[ "$(wc -l <"$T/$SC/gw")" -eq "$N" -a "$(cut -d' ' -f4 "$T/$SC/gw" | sort -u | wc -l)" -eq "$N" ]
	check "$SC: no order number charged twice" [ "$(cut -d' ' -f1 "$T/$SC/gw" | sort | uniq -d | wc -l)" -eq 0 ]
	check "$SC: the ledger equals the gateway order by order" cmp -s "$T/$SC/gw" "$T/$SC/ours"
	check "$SC: every subscription advanced one period" \
		[ "$(psql_at "$1" "SELECT count(*) FROM subscriptions WHERE period = 1 AND cycles_done = 1")" -eq "$N" ]
	if ! cmp -s "$T/$SC/gw" "$T/$SC/ours"; then
		diff "$T/$SC/gw" "$T/$SC/ours" | head -n 10 | sed 's/^/#   /'
	fi
}

# faults on|off: ~5 % of requests faulted, as many of each kind, and a
# reused order number charged again. A busy gateway's charge waits a minute
# (no dunning step, nothing unknown): only the first scenario has it, so
# that the others do not wait for it.
faults() {
	curl -sf -o /dev/null -X POST -d '{"clear":true}' "$FAKE/_fake/faults"
	[ "$1" = on ] || return 0
	kinds="drop_before drop_after hang_after http5xx http429 garbage"
	[ "$SC" = sync ] && kinds="$kinds busy"
	for k in $kinds; do
		curl -sf -o /dev/null -X POST \
			-d "{\"endpoint\":\"*\",\"kind\":\"$k\",\"rate\":0.008,\"ms\":1500}" "$FAKE/_fake/faults"
	done
	curl -sf -o /dev/null -X POST -d '{"endpoint":"*","kind":"dup_charge","rate":1}' "$FAKE/_fake/faults"
}

scenario() { # NAME
	SC=$1
	mkdir -p "$T/$SC"
	[ "$(id -u)" -eq 0 ] && chown postgres "$T/$SC"
	P1=$(free_port)
	P2=$(free_port)
	mode=async
	[ "$SC" = sync ] && mode=sync
	t0=$(date +%s)
	primary "$T/$SC/p" "$P1" || { not_ok "$SC: primary did not start"; return; }
	P1=$PORT_USED
	fakegw_start "$T/$SC" --key "$KEY" --mch-id "$MCH" --latency-ms 20 || { not_ok "$SC: fakegw"; return; }
	PIDS="$PIDS $GWPID"
	curl -sf -o /dev/null -X POST -d "{\"prefix\":\"b\",\"count\":$N}" "$FAKE/_fake/bind"
	faults on

	# the schema and the subscriptions, then the standby
	write_config "$T/owner.yaml" "postgresql://billing_owner:billing@127.0.0.1:$P1/billing" 64
	"$B/billctl" -c "$T/owner.yaml" migrate >/dev/null && "$B/billctl" -c "$T/owner.yaml" plans sync >/dev/null ||
		{ not_ok "$SC: migrate"; return; }
	psql_at "$P1" "SET billing.now = '$(date -d "$NOW" +%s)';
	     INSERT INTO customers (customer_id, state, card_masked, card_type, card_expiry)
	     SELECT 'b' || n, 'bound', '450116XXXXXX7214', 'V', '0728' FROM generate_series(1, $N) n;
	     INSERT INTO subscriptions (customer_id, plan_id, state, anchor, next_charge_at)
	     SELECT 'b' || n, p.id, 'active', t, t FROM generate_series(1, $N) n, plans p,
	            LATERAL (SELECT '$NOW'::timestamptz - make_interval(secs => n % 3600) AS t) a
	      WHERE p.code = 'monthly'" || { not_ok "$SC: subscriptions"; return; }
	standby "$T/$SC/s" "$P1" "$P2" || { not_ok "$SC: standby did not start"; return; }
	P2=$PORT_USED
	want=streaming
	if [ "$mode" = sync ]; then
		want="streaming sync"
		psql_at "$P1" "ALTER SYSTEM SET synchronous_standby_names = '*'" &&
			psql_at "$P1" "SELECT pg_reload_conf()" >/dev/null
	fi
	wait_for "$P1" "SELECT state || CASE WHEN sync_state = 'sync' THEN ' sync' ELSE '' END FROM pg_stat_replication" "$want" 30 ||
		{ not_ok "$SC: the standby is not $want"; return; }

	# the daemons: straight to the servers, or through PgBouncer
	URL="postgresql://billing_daemon:billing@127.0.0.1:$P1,127.0.0.1:$P2/billing?target_session_attrs=read-write"
	if [ "$SC" = bouncer ]; then
		# transaction pooling is refused at start, in one line
		start_bouncer "$P1" transaction || { not_ok "$SC: pgbouncer"; return; }
		write_config "$T/billing.yaml" "postgresql://billing_daemon:billing@127.0.0.1:$PB/billing" 4
		"$B/billingd" -c "$T/billing.yaml" --once --now "$NOW" >"$T/out" 2>"$T/err"
		rc=$?
		check "$SC: billingd refuses PgBouncer's transaction pooling (exit 2, one line)" \
			[ $rc -eq 2 -a "$(grep -c 'transaction mode' "$T/err")" -eq 1 ]
		kill "$(cat "$T/$SC/pgbouncer.pid")"
		sleep 0.5
		start_bouncer "$P1" session || { not_ok "$SC: pgbouncer"; return; }
		URL="postgresql://billing_daemon:billing@127.0.0.1:$PB/billing"
	fi
	write_config "$T/billing.yaml" "$URL" 16
	write_config "$T/billctl.yaml" "$URL" 64
	"$B/billingd" -c "$T/billing.yaml" --check-config >"$T/out" 2>"$T/err"
	if [ "$mode" = sync ]; then
		check "$SC: --check-config is quiet with a synchronous standby" [ ! -s "$T/err" ]
	else
		check "$SC: --check-config warns of a standby none synchronous" \
			[ "$(grep -c 'none synchronous' "$T/err")" -eq 1 ]
	fi
	echo "# $SC: set up in $(($(date +%s) - t0)) s"
	start_daemons
	wait_for "$P1" "SELECT count(*) >= $N / 3 FROM charges WHERE state = 'succeeded'" t 120 ||
		{ not_ok "$SC: the run did not get a third through"; return; }

	if [ "$mode" = async ]; then
		# the standby stops receiving: what commits from now on is lost
		psql_at "$P2" "ALTER SYSTEM SET primary_conninfo = ''" && psql_at "$P2" "SELECT pg_reload_conf()" >/dev/null
		wait_for "$P2" "SELECT count(*) FROM pg_stat_wal_receiver" 0 20
		sleep 2
	fi
	[ "$SC" = killed ] && stop_daemons 9
	kill9_server "$T/$SC/p"
	# what the standby has (all it received replayed), read before the
	# promotion lets daemons write
	wait_for "$P2" "SELECT pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn()" t 30
	gw_orders | cut -d' ' -f1 >"$T/$SC/gw_now"
	psql_at "$P2" "SELECT mch_order_no FROM charges" | sort >"$T/$SC/known"
	as_owner "$bindir/pg_ctl" -D "$T/$SC/s/data" -w -t 60 promote >/dev/null ||
		{ not_ok "$SC: promote"; return; }
	if [ "$SC" = bouncer ]; then
		bouncer_conf "$P2" session
		kill -HUP "$(cat "$T/$SC/pgbouncer.pid")"
	fi
	missing=$(comm -23 "$T/$SC/gw_now" "$T/$SC/known" | wc -l)
	echo "# $SC: $(wc -l <"$T/$SC/gw_now") orders at the gateway, $missing of them unknown to the promoted standby"
	if [ "$mode" = sync ]; then
		check "$SC: the synchronous standby lost no committed intent" [ "$missing" -eq 0 ]
	else
		check "$SC: the promotion lost intents of orders sent" [ "$missing" -gt 0 ]
	fi

	if [ "$SC" = killed ]; then
		# cc_query must answer for a complete list (with faults, an
		# operator would run it again); the dead daemons' leases run
		# out first, so that their open charges are resolved before
		# (a lost paid attempt cannot go back beside an open one)
		faults off
		sleep 9
		"$B/billctl" -c "$T/billctl.yaml" --now "$NOW" reconcile --from "$FROM" --to "$TO" >"$T/out" 2>"$T/err"
		danger=$(grep -c '^danger .*only at the gateway' "$T/out")
		check "$SC: billctl reconcile lists every paid order it does not know as danger ($danger of $missing)" \
			[ "$danger" -eq "$missing" ]
		"$B/billctl" -c "$T/billctl.yaml" --now "$NOW" reconcile --repair --from "$FROM" --to "$TO" >"$T/out" 2>"$T/err"
		psql_at "$P2" "SELECT mch_order_no FROM charges" | sort >"$T/$SC/known"
		check "$SC: --repair records every one of them" \
			[ "$(comm -23 "$T/$SC/gw_now" "$T/$SC/known" | wc -l)" -eq 0 ]
		faults on
		start_daemons
	else
		check "$SC: the daemons survived the failover" kill -0 "$D1" "$D2"
	fi
	echo "# $SC: failover done at $(($(date +%s) - t0)) s"
	wait_for "$P2" "SELECT count(*) FROM subscriptions WHERE period = 1" "$N" 180 ||
		echo "# $SC: not every subscription advanced in time"
	echo "# $SC: all advanced at $(($(date +%s) - t0)) s"
	wait_for "$P2" "SELECT count(*) FROM charges WHERE state IN ('pending', 'unknown')" 0 60
	stop_daemons TERM
	[ "$mode" = async ] && [ "$SC" != killed ] &&
		echo "# $SC: $(cat "$T/$SC"/billingd*.log | grep -o 'event=intents_restored restored=[0-9]*' | tr '\n' ' ')"
	verify "$P2"
	[ "$SC" = bouncer ] && kill "$(cat "$T/$SC/pgbouncer.pid")"
	kill "$GWPID"
	as_owner "$bindir/pg_ctl" -D "$T/$SC/s/data" -m fast stop >/dev/null
	echo "# $SC: $(($(date +%s) - t0)) s"
}

# start_bouncer SERVER_PORT POOL_MODE: PgBouncer on a free port (PB),
# answering; a port taken meanwhile by another process, another port.
start_bouncer() {
	for _ in 1 2 3 4 5; do
		PB=$(free_port)
		bouncer_conf "$1" "$2"
		as_owner pgbouncer -d "$T/$SC/pgbouncer.ini" >"$T/$SC/pgbouncer.out" 2>&1
		sleep 0.5
		psql -X -q -At "postgresql://billing_daemon:billing@127.0.0.1:$PB/billing" \
			-c "SELECT 1" >/dev/null 2>&1 && return 0
	done
	return 1
}

bouncer_conf() { # SERVER_PORT POOL_MODE
	printf '"billing_daemon" "billing"\n' >"$T/$SC/users.txt"
	cat >"$T/$SC/pgbouncer.ini" <<EOF
[databases]
billing = host=127.0.0.1 port=$1 dbname=billing
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PB
unix_socket_dir =
auth_type = plain
auth_file = $T/$SC/users.txt
pool_mode = $2
pidfile = $T/$SC/pgbouncer.pid
logfile = $T/$SC/pgbouncer.log
max_client_conn = 100
default_pool_size = 40
ignore_startup_parameters = extra_float_digits,options
server_login_retry = 1
EOF
	[ "$(id -u)" -eq 0 ] && chown postgres "$T/$SC/pgbouncer.ini" "$T/$SC/users.txt"
}

printf '%s\n' "$KEY" >"$T/merchant.key"
chmod 600 "$T/merchant.key"
for sc in ${FAILOVER_ONLY:-sync async killed bouncer}; do
	scenario "$sc"
done
echo "1..$n"
echo "# $n tests, $failed failed"
[ "$failed" -eq 0 ]
