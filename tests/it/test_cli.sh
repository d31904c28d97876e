#!/bin/sh
# test_cli.sh: issue 7 end to end through the binaries alone: billctl and
# billingd against a fresh PostgreSQL database and build/fakegw over HTTP.
# Enrolment through the fake hosted page, subscriptions, months of charging,
# a partial refund, a void, a payment link, a clean reconcile, a corrupted
# ledger caught, the accountants' export against the gateway's own ledger,
# and bad input refused with one line, the right exit code and no change.
# TAP lines on stdout; needs the PG* variables of tests/run.sh.
set -u
B=${B:-build}
export TZ=America/Toronto # the configuration's timezone, for `date` below

T=$(mktemp -d)
DBNAME=t_cli
. tests/cli_lib.sh
trap cleanup EXIT INT TERM

one_err_line() { [ "$(wc -l <"$T/err")" -eq 1 ] && [ ! -s "$T/out" ]; }
# refused PATTERN: the last billctl exited 1 with one error line matching PATTERN.
refused() { [ $rc -eq 1 ] && one_err_line && err_has "$1"; }
# json_str KEY: the first "KEY":"value" of $T/out.
json_str() { grep -o "\"$1\":\"[^\"]*\"" "$T/out" | head -n 1 | sed 's/.*:"\(.*\)"/\1/'; }

# ---- set-up: fake gateway, fresh database, configuration ----
setup_world || exit 1

# ---- enrolment through the fake hosted card page ----
# enrol ID CARD: enrols, plays the customer, prints the Location's retCode.
enrol() {
	bc customer enrol "$1" --email "$1@example.com" --name "Customer $1"
	[ $rc -eq 0 ] || return 1
	curl -s -o /dev/null -w '%{redirect_url}' "$(cat "$T/out")&card=$2&expiry=0728" |
		sed -n 's/.*retCode=\([A-Z]*\).*/\1/p'
}
check "customer enrol c1: the hosted page binds the card" [ "$(enrol c1 4501161234567214)" = SUCCESS ]
bc customer show c1
check "before the check c1 is pending" has "pending"
bc customer check c1
check "customer check c1: bound at the gateway, exit 0" [ $rc -eq 0 ]
bc --json customer show c1
check "c1 is now bound, with its masked card" [ "$(json_str state)" = bound ]
bc customer enrol c1
check "enrolling a bound customer again is refused (exit 1, one line)" \
	sh -c "[ $rc -eq 1 ] && grep -q 'already bound' '$T/err' && [ \$(wc -l <'$T/err') -eq 1 ]"
check "c2 enrols too" [ "$(enrol c2 4501169999990044)" = SUCCESS ]
bc customer check c2
bc customer enrol c3
check "c3 enrols (pending, never completes)" [ $rc -eq 0 ]
bc customer check c3
check "customer check c3: not bound, exit 1" [ $rc -eq 1 ]
bc customer list
check "customer list shows c1 bound and c3 pending" sh -c "grep -q '^c1 *bound' '$T/out' && grep -q '^c3 *pending' '$T/out'"

# ---- a merchant key the gateway refuses: said in one line, nothing sent ----
printf 'WRONGKEY0123456789\n' >"$T/wrong.key"
chmod 600 "$T/wrong.key"
write_config "$T/wrong.yaml" "$URL" "$T/wrong.key"
CONF=$T/wrong.yaml bc customer check c1
check "a refused key: billctl says so in one line, without the key, exit non-zero" \
	sh -c "[ $rc -ne 0 ] && one_line() { [ \$(wc -l <'$T/err') -eq 1 ]; } && one_line &&
		grep -qx 'billctl: the gateway refused the merchant key (sign error): check gateway.merchant_key_file or IOTPAY_MERCHANT_KEY' '$T/err' &&
		! grep -q WRONGKEY '$T/err'"

# ---- subscriptions ----
bc --json --now 2026-01-31T09:00:00-05:00 subscribe c1 monthly --start 2026-01-31T09:00:00-05:00 --trial-days 0
S1=$(grep -o '"id":[0-9]*' "$T/out" | head -n 1 | cut -d: -f2)
check "subscribe c1 monthly, no trial: active, first charge at the start" \
	sh -c "[ $rc -eq 0 ] && [ '$(json_str state)' = active ] && [ '$(json_str next_charge_at)' = 2026-01-31T09:00:00-05:00 ]"
bc --now 2026-04-15T00:00:00-04:00 subscribe c2 monthly --start 2026-04-15
S2=$(sed -n 's/^subscription \([0-9]*\):.*/\1/p' "$T/out")
check "subscribe c2 monthly with the plan's 14-day trial: first charge at local midnight Apr 29" \
	sh -c "[ $rc -eq 0 ] && grep -q 'trialing, next charge 2026-04-29T00:00:00-04:00' '$T/out'"
bc subscribe c3 weekly
check "a pending customer cannot subscribe without --when-bound (exit 1, one line)" \
	refused 'has no card bound yet'
bc subscribe c3 weekly --when-bound
S3=$(sed -n 's/^subscription \([0-9]*\):.*/\1/p' "$T/out")
check "a pending customer subscribes with --when-bound (charging waits for the binding)" [ $rc -eq 0 ]

# ---- months of charging: billingd --once, month by month ----
for now in 2026-01-31T09:00:01-05:00 2026-02-28T09:00:01-05:00 2026-03-31T09:00:01-04:00; do
	"$B/billingd" -c "$T/billing.yaml" --once --now "$now" 2>>"$T/billingd.log" ||
		echo "# billingd --once --now $now failed"
done
bc --json subscription show "$S1"
check "three months charged for c1 (period 3 next, 3 charges succeeded)" \
	sh -c "grep -q '\"period\":3' '$T/out' && [ \$(grep -o '\"state\":\"succeeded\"' '$T/out' | wc -l) -eq 3 ]"
check "Feb 28 then Mar 31: the anchor day kept, clamped" [ "$(json_str next_charge_at)" = 2026-04-30T09:00:00-04:00 ]
PAY1=$(grep -o '"pay_order_id":"[^"]\+"' "$T/out" | sed -n '1s/.*:"\(.*\)"/\1/p')
PAY2=$(grep -o '"pay_order_id":"[^"]\+"' "$T/out" | sed -n '2s/.*:"\(.*\)"/\1/p')
bc --now 2026-04-29T12:00:00-04:00 charge "$S2"
check "billctl charge: c2's first period charged now, exit 0" \
	sh -c "[ $rc -eq 0 ] && grep -q '^charge T$S2-0-1: succeeded' '$T/out'"
bc charge "$S3"
check "billctl charge of a pending customer's subscription: refused, exit 1" \
	sh -c "[ $rc -eq 1 ] && grep -q 'not bound' '$T/err'"

# ---- refund, void, payment link ----
bc refund "$PAY1" --amount 500
check "partial refund of 5.00 on the first charge" sh -c "[ $rc -eq 0 ] && grep -q ': 5.00 CAD of $PAY1 succeeded' '$T/out'"
bc void "$PAY2"
check "void of the second charge" [ $rc -eq 0 ]
bc refund "$PAY2" --amount 1
check "refund after a void: refused" [ $rc -eq 1 ]
bc --json pay-link c1 1234
LINK=$(json_str pay_url)
check "pay-link c1 12.34: a payment page" sh -c "[ $rc -eq 0 ] && [ -n '$LINK' ] && [ '$(json_str mch_order_no)' != '' ]"
LINKNO=$(json_str mch_order_no)
curl -s -o /dev/null "$LINK&card=4501161234567214&expiry=0728"
bc query --mch-order-no "$LINKNO"
check "query --mch-order-no: the link is paid at the gateway" sh -c "[ $rc -eq 0 ] && grep -q 'status *2' '$T/out'"
bc query --pay-order-id NOSUCHORDER
check "query of an unknown order: exit 1" [ $rc -eq 1 ]

# ---- unknown outcomes, then reconcile ----
fault() { curl -s -o /dev/null -X POST -d "{\"endpoint\":\"$1\",\"kind\":\"drop_after\",\"count\":1}" "$FAKE/_fake/faults"; }
bc --json subscription show "$S2"
PAY3=$(grep -o '"pay_order_id":"[^"]\+"' "$T/out" | sed -n '1s/.*:"\(.*\)"/\1/p')
fault cc_refund
bc refund "$PAY3" --amount 100
check "a refund whose answer is lost: outcome unknown, exit 1" sh -c "[ $rc -eq 1 ] && grep -q 'outcome unknown' '$T/err'"
fault cc_purchasewithtoken
bc --now 2026-05-29T12:05:00-04:00 charge "$S2"
check "a charge whose answer is lost: outcome unknown, exit 1" sh -c "[ $rc -eq 1 ] && grep -q '^charge T$S2-1-1: outcome unknown' '$T/out'"
# Business time: the charges on the billing clock from January, the link
# and the refunds made without --now on today's.
FROM=2026-01-01
TO=$(date -d tomorrow +%F)
bc reconcile --from "$FROM" --to "$TO"
check "reconcile: the lost refund answer and the lost notify resolved from the gateway" \
	sh -c "grep -q '^resolved *refund *TR3 ' '$T/out' && grep -q '^resolved *charge *$LINKNO ' '$T/out'"
GOT=$(sql "SELECT c.state || ' ' || s.period FROM charges c JOIN subscriptions s ON s.id = c.subscription_id WHERE c.mch_order_no = 'T$S2-1-1'")
check "reconcile: the subscription charge in doubt is recorded the daemon's way (paid, period advanced)" \
	[ "$GOT" = "succeeded 2" ]
check "reconcile: clean once everything is resolved (exit 0)" sh -c "[ $rc -eq 0 ] && grep -q ': clean\$' '$T/out'"
bc --json reconcile --from "$FROM" --to "$TO"
check "reconcile --json: clean, nothing left to resolve" \
	sh -c "[ $rc -eq 0 ] && grep -q '\"clean\":true' '$T/out' && grep -q '\"resolved\":0' '$T/out'"

# ---- the export against the gateway's own ledger ----
curl -s "$FAKE/_fake/ledger" | tr -d ' \t\n' | grep -o '"amount":[0-9]*,"status":[0-9]*,"payType":"[a-z]*"' |
	sed 's/"amount":\([0-9]*\),"status":\([0-9]*\),"payType":"\([a-z]*\)"/\1 \2 \3/' >"$T/ledger"
GW_CHARGES=$(awk '$3 == "pay" && ($2 == 2 || $2 == 3) { s += $1 } END { print s + 0 }' "$T/ledger")
GW_REFUNDS=$(awk '$3 == "refund" { s += $1 } END { print s + 0 }' "$T/ledger")
GW_VOIDS=$(awk '$3 == "void" { s += $1 } END { print s + 0 }' "$T/ledger")
# The charges are dated by their billing clock (--now, from January), the
# refunds made without --now by today's.
RFROM=2026-01-01
bc report --from "$RFROM" --to "$TO" --totals
TOTAL=$(grep '^total,' "$T/out" | tr -d '\r')
check "report totals equal the gateway's ledger (charges $GW_CHARGES, refunds $GW_REFUNDS, voids $GW_VOIDS)" \
	[ "$(echo "$TOTAL" | cut -d, -f1-3,5,7,9-)" = "total,,CAD,$GW_CHARGES,-$GW_REFUNDS,-$GW_VOIDS,$((GW_CHARGES - GW_REFUNDS - GW_VOIDS)),$(awk "BEGIN { printf \"%.2f\", ($GW_CHARGES - $GW_REFUNDS - $GW_VOIDS) / 100 }")" ]
bc report --from "$RFROM" --to "$TO"
check "report CSV: the fixed header, CRLF line ends" \
	[ "$(head -n 1 "$T/out")" = "$(printf 'date,type,customer_id,plan,amount_cents,amount,currency,mch_order_no,pay_order_id,trans_id,status,original_pay_order_id,gateway_time\r')" ]
check "report CSV: one row per paid order of the gateway" [ "$(grep -c ',charge,\|,refund,\|,void,' "$T/out")" -eq "$(awk '$2 == 2 || $2 == 3' "$T/ledger" | wc -l)" ]
check "report CSV: the refund is negative, with dollars" grep -q ",refund,c1,monthly,-500,-5.00,CAD," "$T/out"
check "report CSV: the payment link, without a plan" grep -q ",charge,c1,,1234,12.34,CAD,$LINKNO," "$T/out"
sql "ALTER TABLE charges DISABLE TRIGGER charges_final;
     UPDATE charges SET trans_id = '=HYPERLINK(\"x\"),1' WHERE mch_order_no = 'T$S2-0-1';
     ALTER TABLE charges ENABLE TRIGGER charges_final"
bc report --from "$RFROM" --to "$TO"
check "report CSV: a formula-looking field is quoted, prefixed and its quotes doubled" \
	grep -q "\"'=HYPERLINK(\"\"x\"\"),1\"" "$T/out"
bc report --from "$RFROM" --to "$TO" --format json
check "report JSON: rows and totals per day and plan" \
	jq -e '.totals.by_plan[""] == 1234 and (.totals.by_plan.monthly | type) == "number" and
	       (.totals.by_date_plan | type) == "array"' "$T/out" >/dev/null

# ---- subscription admin verbs ----
bc --now 2026-05-30T10:00:00-04:00 subscription pause "$S2"
check "pause: paused, nothing charged" sh -c "[ $rc -eq 0 ] && grep -q 'paused, no charge until resumed' '$T/out'"
bc subscription pause "$S2"
check "pause again: refused, one line" sh -c "[ $rc -eq 1 ] && grep -q 'is paused' '$T/err'"
bc --now 2026-06-01T10:00:00-04:00 --json subscription resume "$S2"
check "resume within the paid period: active, its calendar kept, next charge at the paid period's end" \
	sh -c "[ $rc -eq 0 ] && [ '$(json_str anchor)' = 2026-04-29T00:00:00-04:00 ] && [ '$(json_str next_charge_at)' = 2026-06-29T00:00:00-04:00 ]"
bc subscription change-plan "$S2" annual
check "change-plan: the next plan, from the next period" sh -c "[ $rc -eq 0 ] && grep -q 'then plan annual' '$T/out'"
bc subscription cancel "$S2" --at-period-end
check "cancel --at-period-end: flagged, still active" sh -c "[ $rc -eq 0 ] && grep -q 'active, ends at ' '$T/out'"
bc subscription cancel "$S3"
check "cancel: canceled now" sh -c "[ $rc -eq 0 ] && grep -q 'canceled, no next charge' '$T/out'"
bc subscription list --state canceled
check "subscription list --state canceled" sh -c "grep -q '^$S3 *c3 *weekly' '$T/out' && [ \$(wc -l <'$T/out') -eq 2 ]"

# ---- bad input: one line, the exit code, the ledger unchanged ----
dump() {
	for t in customers subscriptions charges refunds; do
		sql "SELECT * FROM $t ORDER BY 1"
	done
}
dump >"$T/before"
# bad EXIT PATTERN ARGS...: billctl ARGS exits EXIT with one error line matching PATTERN.
bad() {
	want=$1
	pat=$2
	shift 2
	bc "$@"
	if [ $rc -eq "$want" ] && one_err_line && err_has "$pat"; then
		ok "bad input ($*): exit $want, one line"
	else
		not_ok "bad input ($*): exit $want, one line matching '$pat' (got $rc)"
	fi
}
bad 1 "unknown customer 'nobody'" subscribe nobody monthly
bad 1 "unknown plan 'gold'" subscribe c1 gold
bad 1 "unknown customer 'nobody'" pay-link nobody 100
bad 1 "exceeds the 2400 cents remaining" refund "$PAY1" --amount 2401
bad 1 "no succeeded charge" refund NOSUCHORDER
bad 1 "unknown subscription 999" subscription cancel 999
bad 2 "--start" subscribe c1 monthly --start 2026-13-45
bad 2 "--trial-days" subscribe c1 monthly --trial-days -3
bad 2 "--to" reconcile --from "$FROM" --to yesterday
bad 2 "--from" report --from 2026/01/01 --to "$TO"
bad 2 "not an amount in cents" pay-link c1 12.50
bad 2 "not an amount in cents" pay-link c1 0
bad 2 "not an amount in cents" refund "$PAY1" --amount 1e3
bad 2 "not an id" charge abc
bad 2 "unknown verb 'frobnicate'" frobnicate
bad 2 "unknown option '--bogus'" subscribe c1 monthly --bogus
bad 2 "unknown subcommand" subscription explode 1
bad 2 "give one of" query
bad 2 "not csv or json" report --from "$FROM" --to "$TO" --format xlsx
DATABASE_URL=postgresql://billing:billing@127.0.0.1:1/nodb \
	"$B/billctl" -c "$T/billing.yaml" subscription list >"$T/out" 2>"$T/err"
rc=$?
check "database down: one line, exit 1" sh -c "[ $rc -eq 1 ] && [ \$(wc -l <'$T/err') -eq 1 ]"
dump >"$T/after"
check "bad input left the ledger unchanged" cmp -s "$T/before" "$T/after"

# ---- concurrent refunds of one charge, at every isolation level ----
# race LEVEL CENTS WANT: four `billctl refund "$PAY1" --amount CENTS` at once,
# their connections at default_transaction_isolation LEVEL; WANT succeed and
# the others are refused in one line as exceeding what remains.
race() {
	pids=
	for i in 1 2 3 4; do
		PGOPTIONS="-c default_transaction_isolation=$1" \
			"$B/billctl" -c "$T/billing.yaml" refund "$PAY1" --amount "$2" \
			>"$T/race$i.out" 2>"$T/race$i.err" &
		pids="$pids $!"
	done
	# shellcheck disable=SC2086
	wait $pids
	got=0
	refused=0
	for i in 1 2 3 4; do
		if grep -q 'succeeded' "$T/race$i.out"; then
			got=$((got + 1))
		elif [ "$(wc -l <"$T/race$i.err")" -eq 1 ] && grep -q 'exceeds the' "$T/race$i.err"; then
			refused=$((refused + 1))
		fi
	done
	check "4 concurrent refunds of $2 at $1: $3 succeed, the others refused in one line" \
		[ "$got:$refused" = "$3:$((4 - $3))" ]
}
# $PAY1 (2900) has 2400 left
race 'read\ committed' 700 3
race 'repeatable\ read' 200 1
race serializable 100 1
check "the refunds of $PAY1 never exceed it" sh -c \
	"[ \"\$(psql -X -At '$URL' -c \"SELECT sum(r.amount_cents) FROM refunds r JOIN charges c \
ON c.id = r.charge_id WHERE c.pay_order_id = '$PAY1' AND r.state <> 'failed'\")\" -eq 2900 ]"

# ---- a corrupted ledger is caught ----
BAD=T$S1-0-1
DANGER=T$S1-2-1
bc --json pay-link c2 777
GONE=$(json_str mch_order_no)
curl -s -o /dev/null "$(json_str pay_url)&card=4501169999990044&expiry=0728"
bc pay-link c2 888
sql "DELETE FROM charges WHERE mch_order_no = '$GONE'"
# (The tampering declares a billing clock for the event it writes, and has
# that event written before the trigger comes back.)
sql "SET billing.now = '$(date +%s)';
     ALTER TABLE charges DISABLE TRIGGER charges_final;
     UPDATE charges SET amount_cents = amount_cents + 100 WHERE mch_order_no = '$BAD';
     UPDATE charges SET state = 'failed' WHERE mch_order_no = '$DANGER';
     SET CONSTRAINTS ALL IMMEDIATE;
     ALTER TABLE charges ENABLE TRIGGER charges_final"
bc reconcile --from "$FROM" --to "$TO"
check "reconcile: the corrupted amount is named (exit 1)" \
	sh -c "[ $rc -eq 1 ] && grep -q '^mismatch .*$BAD.*amount: ours 3000 cents, the gateway.s 2900' '$T/out'"
check "reconcile: 'we say failed, the gateway has it paid' is listed first as danger" \
	sh -c "sed -n '2,3p' '$T/out' | grep -q '^danger .*$DANGER.*we say failed'"
check "reconcile: a paid order whose row is gone is found by its derivable number" \
	sh -c "sed -n '2,3p' '$T/out' | grep -q '^danger .*$GONE.*only at the gateway'"
check "reconcile: an unpaid payment link is open, not a finding" grep -q '^open ' "$T/out"

# ---- events: the outbox read, replayed and followed with billctl ----
bc events list --type reconcile.mismatch
check "events: each reconcile finding is an event" \
	sh -c "[ $rc -eq 0 ] && [ \$(grep -c reconcile.mismatch '$T/out') -eq 3 ]"
bc reconcile --from "$FROM" --to "$TO"
bc events list --type reconcile.mismatch
check "events: reconciling again adds no finding twice" \
	sh -c "[ \$(grep -c reconcile.mismatch '$T/out') -eq 3 ]"
bc --json events list --type charge.succeeded --customer c1
EVT=$(json_str id)
check "events list --json: the charges of a customer" sh -c "[ $rc -eq 0 ] && [ -n '$EVT' ]"
bc events show "$EVT"
check "events show: the body as signed and sent, no attempt while events.url is empty" \
	sh -c "[ $rc -eq 0 ] && grep -q '{\"id\":\"$EVT\",\"type\":\"charge.succeeded\"' '$T/out' &&
	       grep -q 'no delivery attempt yet' '$T/out'"
bc events replay "$EVT"
check "events replay: queued again" sh -c "[ $rc -eq 0 ] && grep -q '1 event queued' '$T/out'"
bc events show evt_nosuch
check "events show: an unknown id is one line, exit 1" \
	sh -c "[ $rc -eq 1 ] && grep -q \"unknown event 'evt_nosuch'\" '$T/err' && [ ! -s '$T/out' ]"
bc events list --status maybe
check "events list: a bad --status is refused (exit 2)" sh -c "[ $rc -eq 2 ] && grep -q status '$T/err'"
"$B/billctl" -c "$T/billing.yaml" events tail >"$T/tail" 2>&1 &
TAILPID=$!
sleep 1
sql "SELECT set_config('billing.now', '$(date +%s)', false);
     SELECT billing_event('test.ping', 'c2', '{}', NULL)" >/dev/null
for _ in $(seq 50); do
	grep -q test.ping "$T/tail" && break
	sleep 0.1
done
kill -INT "$TAILPID"
wait "$TAILPID"
trc=$?
check "events tail: a new event is printed as it commits, nothing older; SIGINT ends it (exit 0)" \
	sh -c "[ $trc -eq 0 ] && [ \$(wc -l <'$T/tail') -eq 1 ] && grep -q 'test.ping .*customer=c2' '$T/tail'"

echo "1..$n"
[ $failed -eq 0 ]
