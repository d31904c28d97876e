#!/bin/sh
# make bench-events (through tests/bench.sh, which exports the throwaway
# PostgreSQL's PG* and DATABASE_URL): BENCH_N (default 20,000) due
# subscriptions charged by a running billingd (fake gateway answering after
# 20 ms, gateway.max_in_flight 64) while its events.url is down, so that
# the charge rate is measured with a delivery backlog growing; then the
# receiver (build/tests/bench/bench_receiver, 200 at once) comes up and the
# backlog (customer.bound, subscription.created and charge.succeeded of every
# customer) is delivered: deliveries per second, beside the charge rate.
# Compare the charge rate with `make bench` (billingd --once, no events
# thread).
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
bench_setup
now_ms() { date +%s%3N; }

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
T0=$(now_ms)
BILLING_EVENTS_SECRET=benchsecret "$B/billingd" -c "$T/billing.yaml" --now "$NOW" 2>"$T/billingd.log" &
BPID=$!
until [ "$(sql "SELECT count(*) FROM charges WHERE state = 'succeeded'")" -ge "$N" ]; do
	kill -0 "$BPID" 2>/dev/null || fail "billingd exited: $(grep 'level=error' "$T/billingd.log" | head -n 3)"
	sleep 0.2
done
T1=$(now_ms)
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
