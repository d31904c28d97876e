#!/bin/sh
# Daemon throughput (make bench, through tests/bench.sh, which exports the
# throwaway PostgreSQL's PG*, DATABASE_URL and PG_BINDIR). BENCH_N (default
# 100,000) subscriptions, BENCH_DUE (default all) of them due, their
# customers bound on our side (SQL generate_series) and on build/fakegw
# (POST /_fake/bind), the fake answering after BENCH_LATENCY_MS (default 20)
# ms, gateway.max_in_flight 64. Times BENCH_DAEMONS (default 1) `billingd
# --once` started together, their peak RSS and PostgreSQL's CPU time, checks
# that every due subscription was charged exactly once and that the gateway's
# ledger agrees, then runs pgbench with a comparable write (one charge-like
# INSERT and one subscription-like UPDATE per transaction) with one client
# and with eight. Prints the run's figures and adds them to $BENCH_FIGURES;
# tests/bench.sh runs it BENCH_RUNS times (default 3) at each latency of
# BENCH_LATENCY_MS (default "20 1"), each on a new PostgreSQL, and
# tests/bench_verdict.sh prints the medians beside their bounds and exits 1
# when one misses it (docs/design.md, "What a charge costs the database"):
#   PostgreSQL CPU per charge <= 0.25 ms;
#   one daemon at 20 ms or more: >= 90 % of the latency bound (in_flight /
#     latency; several daemons: their combined rate, printed);
#   under 20 ms: >= 90 % of pgbench's eight clients (what the cluster can
#     write), or of the latency bound when that is lower;
#   PostgreSQL's work per charge (buffer accesses) the same at 20 ms as at
#     the lower latency: the median of the pairs' ratios <= 1.10; its CPU
#     per charge is compared too (without autovacuum, which runs on the
#     clock), beside the same ratio for pgbench's write held to the 20 ms
#     run's rate;
#   peak RSS < 30 MB per daemon (the highest of the runs).
# BENCH_PGBENCH_S sets pgbench's seconds (default 10); BENCH_BATCH
# billing.batch_size (default 256); BENCH_LOG=FILE keeps billingd's log;
# BENCH_WRAP="perf record -g -o FILE" runs billingd under a profiler.
set -eu
B=${B:-build}
N=${BENCH_N:-100000}
DUE=${BENCH_DUE:-$N}
DAEMONS=${BENCH_DAEMONS:-1}
PGB_S=${BENCH_PGBENCH_S:-10}
LATENCY_MS=${BENCH_LATENCY_MS:-20}
IN_FLIGHT=64
KEY=BENCHKEY0123456789abcdef
MCH=10000701
NOW=2026-03-01T12:00:00Z # every due subscription is due by then

. tests/bench_setup.sh
[ -x /usr/bin/time ] || fail "/usr/bin/time is missing (make deps installs Debian's time)"
bench_setup

# CPU seconds of the server's exited backends (the postmaster's cutime+cstime).
pg_cpu() {
	awk -v hz="$(getconf CLK_TCK)" '{ print ($16 + $17) / hz }' \
		"/proc/$(head -n 1 "$PGTMP/data/postmaster.pid")/stat"
}

# CPU seconds of autovacuum, from its log lines ("system usage: CPU: user: U
# s, system: S s") after byte $1 of the server's log. It runs on the clock
# (autovacuum_naptime), not per charge: a 34 s run at 20 ms includes some,
# a 13 s run at 1 ms often none, so the two latencies are compared without it.
av_cpu() {
	tail -c +"$(($1 + 1))" "$PGTMP/server.log" | awk '
		/automatic (vacuum|analyze)/ { av = 1 }
		av && /system usage: CPU:/ {
			for (i = 1; i < NF; i++)
				if ($i == "user:" || $i == "system:") s += $(i + 1)
			av = 0
		}
		END { print s + 0 }'
}

# The database's work, whatever the CPU it cost: buffer accesses and
# transactions ended so far (pg_stat_database; a backend's are added when
# it ends).
db_work() {
	sql "SELECT blks_hit + blks_read, xact_commit + xact_rollback FROM pg_stat_database
	      WHERE datname = current_database()" | tr '|' ' '
}

# Waits (10 s at most) until no server process matches the WHERE clause $1:
# an ended backend's CPU time counts once the postmaster has reaped it.
wait_ended() {
	for _ in $(seq 100); do
		[ "$(sql "SELECT count(*) FROM pg_stat_activity WHERE $1")" -eq 0 ] && return
		sleep 0.1
	done
}

# CPU seconds of the fake gateway: it shares the two cores too.
gw_cpu() {
	awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$GWPID/stat"
}

# ---- the run ----
[ -n "${BENCH_HOOK:-}" ] && sh -c "$BENCH_HOOK"
sql "ALTER SYSTEM SET log_autovacuum_min_duration = 0"
sql "SELECT pg_reload_conf()" >/dev/null
LOG0=$(stat -c %s "$PGTMP/server.log")
WORK0=$(db_work)
PG_CPU0=$(pg_cpu)
GW_CPU0=$(gw_cpu)
echo "bench: $DAEMONS x billingd --once (gateway latency ${LATENCY_MS} ms, max_in_flight $IN_FLIGHT)"
T0=$(date +%s%N)
for d in $(seq "$DAEMONS"); do
	# shellcheck disable=SC2086 # BENCH_WRAP is a command line, split on purpose
	/usr/bin/time -f "%e %M %U %S" -o "$T/time.$d" ${BENCH_WRAP:-} \
		"$B/billingd" -c "$T/billing.yaml" --once --now "$NOW" 2>"$T/billingd.$d.log" &
	echo $! >"$T/pid.$d"
done
for d in $(seq "$DAEMONS"); do
	wait "$(cat "$T/pid.$d")" || fail "billingd $d exited: $(grep 'level=error' "$T/billingd.$d.log" | head -n 3)"
done
SECS=$(awk -v a="$T0" -v b="$(date +%s%N)" 'BEGIN { print (b - a) / 1e9 }')
GW_CPU=$(awk -v a="$GW_CPU0" -v b="$(gw_cpu)" 'BEGIN { print b - a }')
RSS_KB=$(cat "$T"/time.* | awk '$2 > m { m = $2 } END { print m }')
CPU_U=$(cat "$T"/time.* | awk '{ s += $3 } END { print s }')
CPU_S=$(cat "$T"/time.* | awk '{ s += $4 } END { print s }')
[ -n "${BENCH_LOG:-}" ] && cat "$T"/billingd.*.log >"$BENCH_LOG"
# its backends, and an autovacuum worker (once it has logged what it did)
wait_ended "application_name LIKE 'billingd%' OR backend_type = 'autovacuum worker'"
sleep 0.2
PG_CPU=$(awk -v a="$PG_CPU0" -v b="$(pg_cpu)" 'BEGIN { print b - a }')
AV_CPU=$(av_cpu "$LOG0")
# shellcheck disable=SC2086 # two numbers each
set -- $WORK0 $(db_work)
BLKS=$(($3 - $1))
XACTS=$(($4 - $2))
[ -n "${BENCH_AFTER:-}" ] && sh -c "$BENCH_AFTER"

# ---- every due subscription charged exactly once, and the gateway agrees ----
[ "$(sql "SELECT count(*) FROM subscriptions WHERE period = 1 AND cycles_done = 1
          AND next_charge_at > '$NOW'")" -eq "$DUE" ] || fail "not every due subscription advanced one period"
[ "$(sql "SELECT count(*) FROM charges")" -eq "$DUE" ] || fail "charge attempts: $(sql "SELECT count(*) FROM charges") for $DUE due subscriptions"
[ "$(sql "SELECT count(DISTINCT subscription_id) FROM charges WHERE state = 'succeeded' AND period = 0")" -eq "$DUE" ] ||
	fail "succeeded charges: $(sql "SELECT state || ' ' || count(*) FROM charges GROUP BY state")"
OURS=$(sql "SELECT count(*) || ' ' || sum(amount_cents) FROM charges WHERE state = 'succeeded'")
curl -sf "$FAKE/_fake/ledger" | grep -o '"amount":[0-9]*,"status":2,"payType":"pay"' |
	awk -F'[:,]' '{ n++; s += $2 } END { printf "%d %d\n", n, s }' >"$T/ledger"
[ "$(cat "$T/ledger")" = "$OURS" ] || fail "gateway orders/cents $(cat "$T/ledger") but ours $OURS"
echo "bench: every due subscription charged exactly once ($DAEMONS daemons); the gateway's $DUE orders and cents match ours"

# ---- pgbench: what a comparable write makes on this cluster, unbatched ----
sql "CREATE SCHEMA pgb;
     CREATE TABLE pgb.subs (id bigint PRIMARY KEY, period int NOT NULL, state text NOT NULL,
                            next_charge_at timestamptz NOT NULL);
     CREATE INDEX ON pgb.subs (next_charge_at);
     CREATE TABLE pgb.charges (id bigint PRIMARY KEY, mch_order_no text NOT NULL UNIQUE,
                               subscription_id bigint NOT NULL, period int NOT NULL,
                               amount_cents bigint NOT NULL, state text NOT NULL,
                               created_at timestamptz NOT NULL DEFAULT now());
     CREATE SEQUENCE pgb.charge_ids;
     INSERT INTO pgb.subs SELECT n, 0, 'active', now() FROM generate_series(1, $DUE) n"
sql "VACUUM ANALYZE pgb.subs"
cat >"$T/charge.sql" <<EOS
\\set sid random(1, $DUE)
BEGIN;
INSERT INTO pgb.charges (id, mch_order_no, subscription_id, period, amount_cents, state)
  SELECT i, 'P' || i, :sid, 0, 2900, 'succeeded' FROM nextval('pgb.charge_ids') i;
UPDATE pgb.subs SET period = period + 1, next_charge_at = next_charge_at + interval '1 month'
 WHERE id = :sid;
END;
EOS
# pgbench CLIENTS [RATE]: sets TPS, and TX_CPU, PostgreSQL's CPU ms per
# transaction.
pgbench_run() {
	c0=$(pg_cpu)
	"$PG_BINDIR/pgbench" -n -c "$1" -j "$(($1 < 2 ? 1 : 2))" -T "$PGB_S" ${2:+-R "$2"} \
		-f "$T/charge.sql" "$DATABASE_URL" >"$T/pgbench.out" 2>&1 ||
		fail "pgbench: $(tail -n 3 "$T/pgbench.out")"
	wait_ended "application_name = 'pgbench'"
	TPS=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$T/pgbench.out")
	TX_CPU=$(awk -v a="$c0" -v b="$(pg_cpu)" -v n="$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$T/pgbench.out")" \
		'BEGIN { print (b - a) * 1000 / n }')
}
pgbench_run 1
TPS1=$TPS
pgbench_run 8
TPS8=$TPS
CPU8=$TX_CPU
# The same write held to this run's rate, when the run did not use all the
# cluster had: what this machine adds to a write's CPU when its cores are
# not kept busy (it is not billingd's doing: pgbench's write is the same).
RATE=$(awk -v n="$DUE" -v s="$SECS" 'BEGIN { printf "%d", n / s }')
CPU_PACED=0
if [ "$(awk -v r="$RATE" -v t="$TPS8" 'BEGIN { print (r < 0.8 * t) }')" -eq 1 ]; then
	pgbench_run 8 "$RATE"
	CPU_PACED=$TX_CPU
fi
sql "SET client_min_messages = warning; DROP SCHEMA pgb CASCADE"

# ---- this run's figures; tests/bench_verdict.sh sets the runs' medians beside their bounds ----
awk -v n="$DUE" -v total="$N" -v s="$SECS" -v kb="$RSS_KB" -v u="$CPU_U" -v sy="$CPU_S" \
	-v pg="$PG_CPU" -v av="$AV_CPU" -v gw="$GW_CPU" -v cores="$(nproc)" -v d="$DAEMONS" -v tps1="$TPS1" -v tps8="$TPS8" \
	-v blks="$BLKS" -v xacts="$XACTS" -v cpu8="$CPU8" -v paced="$CPU_PACED" -v rate="$RATE" 'BEGIN {
	printf "bench: %d charges (%d subscriptions) in %.1f s = %.0f charges/s%s\n",
	       n, total, s, n / s, (d > 1 ? sprintf(" combined (%d daemons on %d cores)", d, cores) : "")
	printf "bench: PostgreSQL CPU per charge %.3f ms; %.1f s for %d charges, of which autovacuum %.1f s\n",
	       pg * 1000 / n, pg, n, av
	printf "bench: PostgreSQL work per charge: %.1f buffer accesses; %.1f transactions per 1,000 charges\n",
	       blks / n, xacts * 1000 / n
	printf "bench: CPU time: billingd %.1f s user + %.1f s system (%.3f ms per charge), the fake gateway %.3f ms per charge, of %.1f s wall, %d cores\n",
	       u, sy, (u + sy) * 1000 / n, gw * 1000 / n, s, cores
	printf "bench: billingd peak RSS %.1f MB\n", kb / 1024
	printf "bench: pgbench comparable write on this cluster: %.0f tps with 1 client, %.0f tps with 8 (one INSERT + one UPDATE per transaction, no triggers, no events), %.3f ms of PostgreSQL CPU per transaction\n",
	       tps1, tps8, cpu8
	if (paced > 0)
		printf "bench: the same write held to this run'"'"'s %d/s: %.3f ms per transaction (%.2f times)\n", rate, paced, paced / cpu8
}'
echo "$DUE $SECS $PG_CPU $RSS_KB $TPS1 $TPS8 $LATENCY_MS $IN_FLIGHT $DAEMONS ${BENCH_RUN:-1} $AV_CPU $BLKS $XACTS $CPU8 $CPU_PACED" >>"${BENCH_FIGURES:-/dev/null}"
