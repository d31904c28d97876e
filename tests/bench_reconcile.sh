#!/bin/sh
# Reconcile throughput (make bench-reconcile, through tests/bench.sh):
# BENCH_N (default 100,000) paid orders, made by one `billingd --once` over
# as many due subscriptions (not timed), then one `billctl reconcile` of the
# day checks every one with cc_query against build/fakegw answering after
# 20 ms, gateway.max_in_flight 64. Prints its rate beside the latency bound
# (max_in_flight / latency) and fails below 80 % of it, or unless every order
# is ok and the ok money equals the charges'.
set -eu
B=${B:-build}
N=${BENCH_N:-100000}
LATENCY_MS=20
IN_FLIGHT=64
KEY=BENCHKEY0123456789abcdef
MCH=10000701
NOW=2026-03-01T12:00:00Z

. tests/bench_setup.sh
[ -x /usr/bin/time ] || fail "/usr/bin/time is missing (make deps installs Debian's time)"
bench_setup
echo "bench: billingd --once makes the $N orders (not timed)"
"$B/billingd" -c "$T/billing.yaml" --once --now "$NOW" 2>"$T/billingd.log" ||
	fail "billingd exited $?: $(grep 'level=error' "$T/billingd.log" | head -n 3)"
PAID=$(sql "SELECT count(*) || ' ' || sum(amount_cents) FROM charges WHERE state = 'succeeded'")
[ "${PAID% *}" -eq "$N" ] || fail "$PAID orders paid of $N"

echo "bench: billctl reconcile of the day (gateway latency ${LATENCY_MS} ms, max_in_flight $IN_FLIGHT)"
# The window is business time: the day of the billing clock the orders were
# made at (NOW, UTC: the configuration's timezone).
/usr/bin/time -f "%e %M" -o "$T/time" "$B/billctl" -c "$T/billing.yaml" --json reconcile \
	--from "${NOW%%T*}" --to "${NOW%%T*}" >"$T/out" 2>"$T/err" ||
	fail "reconcile exited $?: $(head -c 300 "$T/out") $(cat "$T/err")"
read -r SECS RSS_KB <"$T/time"
OK=$(jq -r '"\(.counts.ok) \(.cents.ok)"' "$T/out")
[ "$OK" = "$PAID" ] || fail "reconcile ok (orders cents): $OK, paid: $PAID"
echo "bench: every order ok at the gateway; the ok money equals the charges' ($PAID)"
awk -v n="$N" -v s="$SECS" -v kb="$RSS_KB" -v lat=$LATENCY_MS -v inf=$IN_FLIGHT 'BEGIN {
	bound = inf * 1000 / lat; target = bound * 0.8; rate = n / s
	printf "bench: reconcile checked %d orders in %.1f s = %.0f orders/s (latency bound %.0f/s; target >= %.0f/s: %s)\n",
	       n, s, rate, bound, target, (rate >= target ? "ok" : "BELOW")
	printf "bench: billctl peak RSS %.1f MB\n", kb / 1024
	exit rate >= target ? 0 : 1
}'
