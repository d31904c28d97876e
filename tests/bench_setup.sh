# bench_setup.sh, sourced by the benchmarks that bill N customers: a scratch
# directory T, `fail` and `sql`, and bench_setup, which starts build/fakegw
# (LATENCY_MS) with b1 .. bN bound, writes $T/billing.yaml (IN_FLIGHT
# requests in flight), migrates, syncs the plans and gives every customer one
# monthly subscription: the first DUE (default N) due in the hour before NOW,
# the others a month later. Needs B, N, KEY, MCH, LATENCY_MS, IN_FLIGHT, NOW
# and DATABASE_URL.
. tests/fakegw.sh
T=$(mktemp -d)
GWPID=
cleanup() {
	[ -n "$GWPID" ] && kill "$GWPID" 2>/dev/null && wait "$GWPID" 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

fail() {
	echo "bench: FAILED: $*" >&2
	exit 1
}
sql() { psql -X -q -At -v ON_ERROR_STOP=1 "$DATABASE_URL" -c "$1"; }
bench_setup() {
	# ---- the fake gateway, with every customer bound ----
	fakegw_start "$T" --key "$KEY" --mch-id "$MCH" --latency-ms $LATENCY_MS || fail "the fake gateway did not start"
	curl -sf -o /dev/null -X POST -d "{\"prefix\":\"b\",\"count\":${DUE:-$N}}" "$FAKE/_fake/bind" ||
		fail "POST /_fake/bind"

	# ---- our side: schema, plans, N bound customers with one due subscription each ----
	printf '%s\n' "$KEY" >"$T/merchant.key"
	chmod 600 "$T/merchant.key"
	cat >"$T/billing.yaml" <<EOF
gateway:
  base_url: $FAKE/v2
  mch_id: "$MCH"
  job_no: bench
  merchant_key_file: $T/merchant.key
  timeout_ms: 10000
  max_in_flight: $IN_FLIGHT
database:
  url: "$DATABASE_URL"
billing:
  order_prefix: B
  batch_size: ${BENCH_BATCH:-256}
listen:
  address: 127.0.0.1:0
enrolment:
  return_url: http://127.0.0.1:9/iotpay/return
plans_dir: $PWD/plans
EOF
	"$B/billctl" -c "$T/billing.yaml" migrate >/dev/null
	"$B/billctl" -c "$T/billing.yaml" plans sync >/dev/null
	echo "bench: setting up $N bound customers with a monthly subscription each, ${DUE:-$N} due"
	# Due times spread over the hour before NOW, as a day's renewals would be.
	# (Their customer.bound and subscription.created events are stamped NOW.)
	sql "SET billing.now = '$(date -d "$NOW" +%s)';
	     INSERT INTO customers (customer_id, state, card_masked, card_type, card_expiry)
	     SELECT 'b' || n, 'bound', '450116XXXXXX7214', 'V', '0728' FROM generate_series(1, $N) n;
	     INSERT INTO subscriptions (customer_id, plan_id, state, anchor, next_charge_at)
	     SELECT 'b' || n, p.id, 'active', t, t
	       FROM generate_series(1, $N) n, plans p,
	            LATERAL (SELECT '$NOW'::timestamptz - make_interval(secs => n % 3600)
	                            + CASE WHEN n > ${DUE:-$N} THEN interval '1 month' ELSE interval '0' END
	                            AS t) a
	      WHERE p.code = 'monthly'"
	sql "VACUUM ANALYZE"
}
