#!/bin/sh
# Daemon throughput (make bench, through tests/bench.sh, which exports the
# throwaway PostgreSQL's PG*, DATABASE_URL and PG_BINDIR): BENCH_N (default
# 100,000) subscriptions all due, customers bound on our side (SQL
# generate_series) and on build/fakegw (POST /_fake/bind), the fake answering
# after 20 ms, gateway.max_in_flight 64. Times one `billingd --once` and its
# peak RSS, checks that every subscription was charged exactly once and that
# the gateway's ledger agrees, then runs pgbench with a comparable write (one
# charge-like INSERT and one subscription-like UPDATE per transaction, one
# client) for scale. BENCH_PGBENCH_S sets pgbench's seconds (default 10);
# BENCH_BATCH billing.batch_size (default 256); BENCH_LOG=FILE keeps billingd's
# log; BENCH_WRAP="perf record -g -o FILE" runs billingd under a profiler.
set -eu
B=${B:-build}
N=${BENCH_N:-100000}
PGB_S=${BENCH_PGBENCH_S:-10}
LATENCY_MS=${BENCH_LATENCY_MS:-20}
IN_FLIGHT=64
KEY=BENCHKEY0123456789abcdef
MCH=10000701
NOW=2026-03-01T12:00:00Z # every subscription is due by then

. tests/bench_setup.sh
[ -x /usr/bin/time ] || fail "/usr/bin/time is missing (make deps installs Debian's time)"
bench_setup

# CPU seconds of the server's exited backends (the postmaster's cutime+cstime).
pg_cpu() {
	awk -v hz="$(getconf CLK_TCK)" '{ print ($16 + $17) / hz }' \
		"/proc/$(head -n 1 "$PGTMP/data/postmaster.pid")/stat"
}

# ---- the run ----
[ -n "${BENCH_HOOK:-}" ] && sh -c "$BENCH_HOOK"
PG_CPU0=$(pg_cpu)
echo "bench: billingd --once (gateway latency ${LATENCY_MS} ms, max_in_flight $IN_FLIGHT)"
# shellcheck disable=SC2086 # BENCH_WRAP is a command line, split on purpose
/usr/bin/time -f "%e %M %U %S" -o "$T/time" ${BENCH_WRAP:-} \
	"$B/billingd" -c "$T/billing.yaml" --once --now "$NOW" 2>"$T/billingd.log" ||
	fail "billingd exited $?: $(grep 'level=error' "$T/billingd.log" | head -n 3)"
read -r SECS RSS_KB CPU_U CPU_S <"$T/time"
[ -n "${BENCH_LOG:-}" ] && cp "$T/billingd.log" "$BENCH_LOG"
# Its backend's time counts once the postmaster has reaped it.
for _ in $(seq 50); do
	[ "$(sql "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'billingd%'")" -eq 0 ] && break
	sleep 0.1
done
sleep 0.2
PG_CPU=$(awk -v a="$PG_CPU0" -v b="$(pg_cpu)" 'BEGIN { print b - a }')
[ -n "${BENCH_AFTER:-}" ] && sh -c "$BENCH_AFTER"

# ---- every subscription charged exactly once, and the gateway agrees ----
[ "$(sql "SELECT count(*) FROM subscriptions WHERE period = 1 AND cycles_done = 1
          AND next_charge_at > '$NOW'")" -eq "$N" ] || fail "not every subscription advanced one period"
[ "$(sql "SELECT count(*) FROM charges")" -eq "$N" ] || fail "charge attempts: $(sql "SELECT count(*) FROM charges") for $N subscriptions"
[ "$(sql "SELECT count(DISTINCT subscription_id) FROM charges WHERE state = 'succeeded' AND period = 0")" -eq "$N" ] ||
	fail "succeeded charges: $(sql "SELECT state || ' ' || count(*) FROM charges GROUP BY state")"
OURS=$(sql "SELECT count(*) || ' ' || sum(amount_cents) FROM charges WHERE state = 'succeeded'")
curl -sf "$FAKE/_fake/ledger" | grep -o '"amount":[0-9]*,"status":2,"payType":"pay"' |
	awk -F'[:,]' '{ n++; s += $2 } END { printf "%d %d\n", n, s }' >"$T/ledger"
[ "$(cat "$T/ledger")" = "$OURS" ] || fail "gateway orders/cents $(cat "$T/ledger") but ours $OURS"
echo "bench: every subscription charged exactly once; the gateway's $N orders and cents match ours"

awk -v n="$N" -v s="$SECS" -v kb="$RSS_KB" -v lat=$LATENCY_MS -v inf=$IN_FLIGHT \
	-v u="$CPU_U" -v sy="$CPU_S" -v pg="$PG_CPU" -v cores="$(nproc)" 'BEGIN {
	bound = inf * 1000 / lat; target = bound * 0.8; rate = n / s
	printf "bench: %d charges in %.1f s = %.0f charges/s (latency bound %.0f/s; target >= %.0f/s: %s)\n",
	       n, s, rate, bound, target, (rate >= target ? "ok" : "BELOW")
	printf "bench: CPU time: billingd %.1f s user + %.1f s system, PostgreSQL %.1f s (of %.1f s wall, %d cores)\n",
	       u, sy, pg, s, cores
	printf "bench: billingd peak RSS %.1f MB (target < 30 MB: %s)\n", kb / 1024, (kb < 30 * 1024 ? "ok" : "ABOVE")
}'

# ---- pgbench: what one charge costs the database, unbatched, one connection ----
sql "CREATE SCHEMA pgb;
     CREATE TABLE pgb.subs (id bigint PRIMARY KEY, period int NOT NULL, state text NOT NULL,
                            next_charge_at timestamptz NOT NULL);
     CREATE INDEX ON pgb.subs (next_charge_at);
     CREATE TABLE pgb.charges (id bigint PRIMARY KEY, mch_order_no text NOT NULL UNIQUE,
                               subscription_id bigint NOT NULL, period int NOT NULL,
                               amount_cents bigint NOT NULL, state text NOT NULL,
                               created_at timestamptz NOT NULL DEFAULT now());
     CREATE SEQUENCE pgb.charge_ids;
     INSERT INTO pgb.subs SELECT n, 0, 'active', now() FROM generate_series(1, $N) n"
sql "VACUUM ANALYZE pgb.subs"
cat >"$T/charge.sql" <<EOF
\\set sid random(1, $N)
BEGIN;
INSERT INTO pgb.charges (id, mch_order_no, subscription_id, period, amount_cents, state)
  SELECT i, 'P' || i, :sid, 0, 2900, 'succeeded' FROM nextval('pgb.charge_ids') i;
UPDATE pgb.subs SET period = period + 1, next_charge_at = next_charge_at + interval '1 month'
 WHERE id = :sid;
END;
EOF
"$PG_BINDIR/pgbench" -n -c 1 -T "$PGB_S" -f "$T/charge.sql" "$DATABASE_URL" >"$T/pgbench.out" 2>&1 ||
	fail "pgbench: $(tail -n 3 "$T/pgbench.out")"
TPS=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$T/pgbench.out")
sql "SET client_min_messages = warning; DROP SCHEMA pgb CASCADE"
printf 'bench: pgbench comparable write on this cluster: %.0f tps (1 client, one INSERT + one UPDATE per transaction, no triggers; billingd records many outcomes per transaction)\n' "$TPS"
