#!/bin/sh
# make bench-events (through tests/bench.sh, which exports the throwaway
# PostgreSQL's PG* and DATABASE_URL): BENCH_N (default 20,000) due
# subscriptions charged by a running billingd (fake gateway answering after
# 20 ms, gateway.max_in_flight 64) while its events.url is down, so that
# the charge rate is measured with a delivery backlog growing; then the
# receiver (build/tests/bench/bench_receiver, 200 at once) comes up and the
# backlog (the charge.succeeded of every customer) is delivered: deliveries
# per second, beside the charge rate.
# First the same charging with events off (no events.url): the two charge
# rates side by side, within 10 % of each other, and PostgreSQL's time per
# charge from pg_stat_statements, with the part spent in the event triggers.
set -eu
B=${B:-build}
N=${BENCH_N:-20000}
LATENCY_MS=20
IN_FLIGHT=64
EV_IN_FLIGHT=${BENCH_EVENTS_IN_FLIGHT:-32}
KEY=BENCHKEY0123456789abcdef
MCH=10000701
NOW=2026-03-01T12:00:00Z

. tests/bench_setup.sh
# pg_stat_statements (nested statements too) gives PostgreSQL's time per
# charge and the share of it in the charge event trigger (events_charges_final); loaded
# before the set-up, so that both runs below find the server as warm.
printf "shared_preload_libraries = 'pg_stat_statements'\npg_stat_statements.track = all\n" \
	>>"$PGTMP/data/postgresql.conf"
sh tests/pg.sh restart "$PGTMP"
bench_setup
sql "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"
now_ms() { date +%s%3N; }

# ---- events off (no events.url): the charge rate to compare with ----
# charge_rate: charges per second, from the first attempt written to the last
# outcome recorded (the database's clock: no polling granularity).
charge_rate() {
	sql "SELECT round(count(*) / extract(epoch FROM max(updated_at) - min(created_at)))
	       FROM charges WHERE state = 'succeeded'"
}
# pg_ms_per_charge: PostgreSQL's execution time per charge since the last
# pg_stat_statements_reset(), all of it and in the charge event trigger (its
# events_charges_final call, nested in the statement that made charges
# final), in ms.
pg_ms_per_charge() {
	sql "SELECT round((sum(total_exec_time) FILTER (WHERE toplevel) / $N)::numeric, 3) || ' ' ||
	            round((coalesce(sum(total_exec_time)
	                  FILTER (WHERE query LIKE 'SELECT events_charges_final(%'), 0) / $N)::numeric, 3)
	       FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database
	                                              WHERE datname = current_database())"
}
# pgss_top LABEL: with BENCH_PGSS_TOP=N, the N statements that took the most.
pgss_top() {
	[ -n "${BENCH_PGSS_TOP:-}" ] || return 0
	echo "bench: $1: top statements (ms total, calls, top-level)"
	sql "SELECT round(total_exec_time::numeric, 1) || ' ' || calls || ' ' || toplevel || ' ' ||
	            left(regexp_replace(query, '\s+', ' ', 'g'), 110)
	       FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT $BENCH_PGSS_TOP" |
		sed 's/^/bench:   /'
}
# until_charged LOG: a running billingd (BPID) has charged N.
until_charged() {
	until [ "$(sql "SELECT count(*) FROM charges WHERE state = 'succeeded'")" -ge "$N" ]; do
		kill -0 "$BPID" 2>/dev/null || fail "billingd exited: $(grep 'level=error' "$1" | head -n 3)"
		sleep 0.05
	done
}
echo "bench: billingd charging $N subscriptions with events off (no events.url)"
sql "SELECT pg_stat_statements_reset()" >/dev/null
"$B/billingd" -c "$T/billing.yaml" --now "$NOW" 2>"$T/off.log" &
BPID=$!
until_charged "$T/off.log"
kill "$BPID" && wait "$BPID" || true
RATE_OFF=$(charge_rate)
PG_OFF=$(pg_ms_per_charge)
pgss_top "events off"
# The same due subscriptions again, under new order numbers (the gateway
# keeps the old ones): the ledger back to before the run.
sql "SET billing.now = '$(date -d "$NOW" +%s)';
     DELETE FROM event_attempts; DELETE FROM events; DELETE FROM charges;
     UPDATE subscriptions SET period = 0, cycles_done = 0, attempts = 0, period_start = NULL,
            period_end = NULL, next_charge_at = anchor"
sql "VACUUM ANALYZE"
sed -i 's/^  order_prefix: B$/  order_prefix: E/' "$T/billing.yaml"

# A port nothing listens on yet: the receiver's, once it comes up.
"$B/tests/bench/bench_receiver" >"$T/rcv.out" 2>&1 &
RPID=$!
for _ in $(seq 50); do grep -q '^port=' "$T/rcv.out" && break; sleep 0.1; done
RPORT=$(sed -n 's/^port=//p' "$T/rcv.out")
[ -n "$RPORT" ] || fail "bench_receiver did not start"
kill "$RPID" && wait "$RPID" 2>/dev/null || true
cat >>"$T/billing.yaml" <<EOY
events:
  url: http://127.0.0.1:$RPORT/hook
  max_in_flight: $EV_IN_FLIGHT
  retry: [1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s]
EOY

echo "bench: billingd charging $N subscriptions with events.url down"
sql "SELECT pg_stat_statements_reset()" >/dev/null
T0=$(now_ms)
BILLING_EVENTS_SECRET=benchsecret "$B/billingd" -c "$T/billing.yaml" --now "$NOW" 2>"$T/billingd.log" &
BPID=$!
until_charged "$T/billingd.log"
T1=$(now_ms)
RATE_DOWN=$(charge_rate)
PG_DOWN=$(pg_ms_per_charge)
pgss_top "receiver down"
PENDING=$(sql "SELECT count(*) FROM events WHERE status = 'pending'")
echo "bench: receiver up; delivering the backlog of $PENDING events"
"$B/tests/bench/bench_receiver" --port "$RPORT" >"$T/rcv.out" 2>&1 &
RPID=$!
T2=$(now_ms)
until [ "$(sql "SELECT count(*) FROM events WHERE status = 'pending'")" -eq 0 ]; do
	kill -0 "$BPID" 2>/dev/null || fail "billingd exited"
	sleep 0.2
done
T3=$(now_ms)
kill "$BPID" && wait "$BPID" || true
kill "$RPID" && wait "$RPID" 2>/dev/null || true
DELIVERED=$(sql "SELECT count(*) FROM events WHERE status = 'delivered'")
[ "$DELIVERED" -eq "$PENDING" ] || fail "$DELIVERED delivered of $PENDING"
[ "$(sql "SELECT count(*) FROM events WHERE type = 'charge.succeeded'")" -eq "$N" ] ||
	fail "charge.succeeded events: $(sql "SELECT count(*) FROM events WHERE type = 'charge.succeeded'") for $N charges"
awk -v n="$N" -v c="$((T1 - T0))" -v d="$DELIVERED" -v e="$((T3 - T2))" -v inf="$EV_IN_FLIGHT" 'BEGIN {
	printf "bench: %d charges in %.1f s = %.0f charges/s with the receiver down (compare make bench)\n", n, c / 1000, n * 1000 / c
	printf "bench: %d events delivered in %.1f s = %.0f deliveries/s (events.max_in_flight %d, local receiver)\n", d, e / 1000, d * 1000 / e, inf
}'
# Never in the way of money: with the receiver down the charge rate is
# within 10 % of the rate with events off.
awk -v off="$RATE_OFF" -v down="$RATE_DOWN" -v pgoff="$PG_OFF" -v pgdown="$PG_DOWN" 'BEGIN {
	split(pgoff, a, " "); split(pgdown, b, " "); r = down / off
	printf "bench: charge rate with the receiver down %d/s, with events off %d/s: %.1f %% (bound: within 10 %%: %s)\n",
	       down, off, 100 * r, (r >= 0.9 && r <= 1.1 ? "ok" : "OUTSIDE")
	printf "bench: PostgreSQL time per charge (pg_stat_statements): %.3f ms with events off, %.3f ms with the receiver down; in the event triggers %.3f / %.3f ms\n",
	       a[1], b[1], a[2], b[2]
	exit r >= 0.9 && r <= 1.1 ? 0 : 1
}'
