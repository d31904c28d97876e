#!/bin/sh
# test_books.sh: issue 14 end to end through billctl and billingd alone,
# against a fresh PostgreSQL database and build/fakegw over HTTP: a quarter
# simulated under --now whose monthly reports equal the gateway's ledger to
# the cent (refunds and voids naming their charge), a month that does not
# close while an outcome is unknown, --month and --totals.
# TAP lines on stdout; needs the PG* variables of tests/run.sh.
set -u
B=${B:-build}
export TZ=America/Toronto # the configuration's timezone
T=$(mktemp -d)
DBNAME=t_books
. tests/cli_lib.sh
trap cleanup EXIT INT TERM

setup_world || exit 1
if enrol c1 4501161234567214 && enrol c2 4501169999990044 && enrol c3 4501161234567214; then
	ok "c1, c2, c3 enrol through the hosted page"
else
	not_ok "c1, c2, c3 enrol through the hosted page"
fi

# ---- a quarter under --now ----
# expect NUMBER MONTH: the month the movement NUMBER belongs to.
expect() { echo "$1 $2" >>"$T/expect"; }
sub() { # CUSTOMER PLAN --start T: subscribed at T on the billing clock
	bc --json --now "$4" subscribe "$@" --trial-days 0
	grep -o '"id":[0-9]*' "$T/out" | head -n 1 | cut -d: -f2
}
S1=$(sub c1 monthly --start 2026-01-05T09:00:00-05:00)
S2=$(sub c2 monthly --start 2026-01-10T09:00:00-05:00)
S3=$(sub c3 annual --start 2026-02-15T09:00:00-05:00)
for now in 2026-01-31T23:30:00-05:00 2026-02-28T12:00:00-05:00 2026-03-31T12:00:00-04:00; do
	"$B/billingd" -c "$T/billing.yaml" --once --now "$now" 2>>"$T/billingd.log" ||
		echo "# billingd --once --now $now failed"
done
expect "T$S1-0-1" 2026-01
expect "T$S2-0-1" 2026-01
expect "T$S1-1-1" 2026-02
expect "T$S2-1-1" 2026-02
expect "T$S3-0-1" 2026-02
expect "T$S1-2-1" 2026-03
expect "T$S2-2-1" 2026-03
pay() { sql "SELECT pay_order_id FROM charges WHERE mch_order_no = '$1'"; }
# refund_at NOW MONTH ARGS...: a refund or void on the billing clock.
refund_at() {
	bc --now "$1" --json "$3" "$4" ${5:+--amount} ${5:-}
	expect "$(grep -o '"mch_refund_no":"[^"]*"' "$T/out" | cut -d'"' -f4)" "$2"
	[ $rc -eq 0 ]
}
check "refund 5.00 of c1's January charge on Feb 20" refund_at 2026-02-20T10:00:00-05:00 2026-02 refund "$(pay "T$S1-0-1")" 500
check "void of c2's March charge at 23:30 on Mar 31 (still March in Toronto)" \
	refund_at 2026-03-31T23:30:00-04:00 2026-03 void "$(pay "T$S2-2-1")"
check "full refund of c3's annual charge on Mar 15" refund_at 2026-03-15T10:00:00-04:00 2026-03 refund "$(pay "T$S3-0-1")"

# The gateway's ledger: "mchOrderNo amount payType originalOrderId" per paid order.
curl -s "$FAKE/_fake/ledger" |
	jq -r '.orders[] | select(.status == 2 or .status == 3) |
	       "\(.mchOrderNo) \(.amount) \(.payType) \(.originalOrderId // "")"' >"$T/ledger"
# ledger_month MONTH: the month's orders as report rows would show them:
# "type mchOrderNo signed_cents original".
ledger_month() {
	awk -v m="$1" 'NR == FNR { month[$1] = $2; next }
	     month[$1] == m { t = $3 == "pay" ? "charge" : $3
	                      printf "%s %s %d %s\n", t, $1, t == "charge" ? $2 : -$2, $4 }' \
		"$T/expect" "$T/ledger" | sort
}
# report_month: the rows of $T/out (CSV) in the same form.
report_month() {
	tr -d '\r' <"$T/out" | awk -F, 'NR > 1 && NF == 13 { print $2, $8, $5, $12 }' | sort
}
check "billingd under --now dates every charge it settled by its attempt, on that clock" \
	[ "$(sql "SELECT count(*) FROM charges WHERE settled_at IS NULL OR attempted_at IS NULL
	          OR settled_at <> attempted_at OR settled_at < '2026-01-01' OR settled_at > '2026-04-01'")" = 0 ]
for m in 2026-01 2026-02 2026-03; do
	bc report --month "$m"
	report_month >"$T/got"
	ledger_month "$m" >"$T/want"
	check "report --month $m: its refunds and voids are the gateway's, each naming its charge" \
		[ "$(grep -v '^charge' "$T/got")" = "$(grep -v '^charge' "$T/want")" ]
	bc --json report summary --month "$m"
	# "gross refunded voided net" of the month's ALL row, and the ledger's.
	SUM=$(jq -r '.rows[] | select(.plan == null) | "\(.gross_cents) \(.refunded_cents) \(.voided_cents) \(.net_cents)"' "$T/out")
	SUM=${SUM:-0 0 0 0} # a month with nothing has no rows
	LEDGER=$(awk '{ s[$1] += $3 } END { printf "%d %d %d %d", s["charge"], -s["refund"], -s["void"],
	              s["charge"] + s["refund"] + s["void"] }' "$T/want")
	check "report summary --month $m: refunded and voided equal the ledger's" \
		[ "$(echo "$SUM" | cut -d' ' -f2-3)" = "$(echo "$LEDGER" | cut -d' ' -f2-3)" ]
	if [ "$SUM" = "$LEDGER" ]; then
		ok "report summary --month $m: gross, refunded, voided, net equal the ledger's ($LEDGER)"
	else
		not_ok "report summary --month $m: want $LEDGER, got $SUM"
	fi
	if cmp -s "$T/got" "$T/want"; then
		ok "report --month $m equals the gateway's ledger for that month, to the cent"
	else
		not_ok "report --month $m equals the gateway's ledger for that month"
		diff "$T/want" "$T/got" | sed 's/^/#   /'
	fi
done
bc report --month 2026-03
check "report: the fixed header of thirteen columns" \
	[ "$(head -n 1 "$T/out")" = "$(printf 'date,type,customer_id,plan,amount_cents,amount,currency,mch_order_no,pay_order_id,trans_id,status,original_pay_order_id,gateway_time\r')" ]
check "report: the void at 23:30 on Mar 31 is dated 2026-03-31 (local), negative, of its charge" \
	grep -q "^2026-03-31,void,c2,monthly,-2900,-29.00,CAD,TR[0-9]*,IP[0-9]*,TR[0-9]*,succeeded,$(pay "T$S2-2-1"),[0-9-]* [0-9:]*" "$T/out"
bc report --from 2026-01-01 --to 2027-12-31
check "report: charges carry the gateway's paySuccTime and no original" \
	grep -q ",charge,c1,monthly,2900,29.00,CAD,T$S1-2-1,IP[0-9]*,TR[0-9]*,succeeded,,20[0-9-]* [0-9:]*" "$T/out"
bc report --month 2026-04
check "report of a month with nothing in it: the header alone" [ "$(wc -l <"$T/out")" -eq 1 ]

# ---- --totals: after the rows, with counts and currency ----
bc report --month 2026-03 --totals
tr -d '\r' <"$T/out" >"$T/csv"
ROWS=$(grep -c ',succeeded,' "$T/csv")
check "--totals: the rows first, then a blank line, then the totals header" \
	sh -c "[ \"\$(sed -n '$((ROWS + 2))p' '$T/csv')\" = '' ] &&
	       [ \"\$(sed -n '$((ROWS + 3))p' '$T/csv')\" = 'date,plan,currency,charges,charges_cents,refunds,refunds_cents,voids,voids_cents,net_cents,net' ]"
W=$(ledger_month 2026-03)
WANT=$(echo "$W" | awk '{ c[$1]++; s[$1] += $3; net += $3 }
	END { printf "total,,CAD,%d,%d,%d,%d,%d,%d,%d,%.2f", c["charge"], s["charge"], c["refund"], s["refund"],
	      c["void"], s["void"], net, net / 100 }')
check "--totals: March's total equals the ledger's ($WANT)" grep -qx "$WANT" "$T/csv"
check "--totals: the window's total adds up its own rows" \
	[ "$(grep '^total,' "$T/csv" | cut -d, -f10)" = "$(awk -F, 'NF == 13 && NR > 1 { s += $5 } END { print s }' "$T/csv")" ]
check "--totals: per day and plan, with counts (Mar 15: one annual refund of 290.00)" \
	grep -qx "2026-03-15,annual,CAD,0,0,1,-29000,0,0,-29000,-290.00" "$T/csv"
bc report --month 2026-03 --format json
check "report JSON: rows and totals, integers in cents" \
	sh -c "jq -e '(.rows | length) == $ROWS and .timezone == \"America/Toronto\" and
	             .totals.window[0].net_cents == ([.rows[].amount_cents] | add) and
	             .totals.by_plan.annual == -29000 and .totals.by_date[\"2026-03-15\"] == -29000 and
	             (.rows[] | select(.type == \"void\") | .original_pay_order_id) == \"$(pay "T$S2-2-1")\"' '$T/out' >/dev/null"
bad() {
	want=$1
	pat=$2
	shift 2
	bc "$@"
	if [ $rc -eq "$want" ] && [ "$(wc -l <"$T/err")" -eq 1 ] && err_has "$pat" && [ ! -s "$T/out" ]; then
		ok "bad input ($*): exit $want, one line"
	else
		not_ok "bad input ($*): exit $want, one line matching '$pat' (got $rc)"
	fi
}
bad 2 "not a month" report --month 2026-13
bad 2 "not a month" report --month 2026-1
bad 2 "either --month or --from" report --month 2026-03 --from 2026-03-01 --to 2026-03-31
bad 2 "give --month" report --from 2026-03-01

# ---- a month that closes ----
fault() { curl -s -o /dev/null -X POST -d "{\"endpoint\":\"$1\",\"kind\":\"drop_after\",\"count\":1}" "$FAKE/_fake/faults"; }
fault cc_purchasewithtoken
bc --now 2026-04-05T10:00:00-04:00 charge "$S1"
check "a charge on Apr 5 whose answer is lost: outcome unknown" grep -q "^charge T$S1-3-1: outcome unknown" "$T/out"
fault cc_refund
bc --now 2026-04-06T10:00:00-04:00 refund "$(pay "T$S1-1-1")" --amount 100
RNO=$(grep -o 'T*R[0-9]*' "$T/err" | head -n 1)
check "a refund on Apr 6 whose answer is lost: outcome unknown" err_has "outcome unknown"
bc report --month 2026-04
check "report --month 2026-04 with unknown outcomes: exit 1, nothing on stdout" \
	sh -c "[ $rc -eq 1 ] && [ ! -s '$T/out' ]"
check "... it says so in one line, names both and says to run billctl reconcile" \
	grep -qx "billctl: 2 movements of the window have an unknown outcome: charge T$S1-3-1 (unknown), refund $RNO (unknown); run billctl reconcile, then report again" "$T/err"
bc report --month 2026-04 --allow-open
check "--allow-open: reported anyway (exit 0, the warning kept)" \
	sh -c "[ $rc -eq 0 ] && grep -q 'allow-open' '$T/err' && [ \$(wc -l <'$T/out') -eq 1 ]"
# The window is business time (the billing clock of each attempt and
# request), not the day the rows were written: the real today holds them all.
bc --now 2026-04-07T10:00:00-04:00 --json reconcile --from "$(date -d yesterday +%F)" --to "$(date -d tomorrow +%F)"
check "reconcile over the real today's dates (the database's clock) finds none of the billing-clock rows" \
	[ "$(jq -r "[.counts[]] | add" "$T/out")" = 0 ]
bc --now 2026-04-07T10:00:00-04:00 reconcile --from 2026-01-01 --to 2026-04-30
check "reconcile over the quarter and April on the billing clock resolves both (exit 0)" [ $rc -eq 0 ]
# The money beside the counts: what is ok and what was resolved is all the
# gateway's ledger holds (charges less refunds and voids), to the cent.
curl -s "$FAKE/_fake/ledger" | jq -r '.orders[] | select(.status == 2 or .status == 3) |
	(if .payType == "pay" then .amount else -.amount end)' | awk '{ s += $1 } END { printf "%.2f", s / 100 }' >"$T/net"
OKM=$(sed -n 's/.*: [0-9]* ok (\([-0-9.]*\)), [0-9]* resolved (\([-0-9.]*\)), .*/\1 \2/p' "$T/out")
check "reconcile: money beside the counts; ok + resolved = the ledger's net $(cat "$T/net") (got $OKM)" \
	[ "$(echo "$OKM" | awk '{ printf "%.2f", $1 + $2 }')" = "$(cat "$T/net")" ]
check "reconcile: the resolved refund's money is -1.00, mismatch and danger 0.00" \
	grep -q ' 1 resolved (-1.00), 0 open, 0 unresolved, 0 mismatch (0.00), 0 danger (0.00);' "$T/out"
check "reconcile, stderr not a terminal: no progress" [ ! -s "$T/err" ]
script -qec "$B/billctl -c $T/billing.yaml reconcile --from 2026-01-01 --to 2026-04-30" /dev/null >"$T/tty" 2>&1
check "reconcile on a terminal: progress in place (counts and rate), ending with all checked" \
	grep -q "reconcile: \([0-9]*\) of \1 orders checked, [0-9]*/s" "$T/tty"
bc --json reconcile --from 2026-04-05 --to 2026-04-06
check "reconcile over Apr 5-6 (billing clock): that window's charge and refund, and nothing else" \
	[ "$(jq -r '"\(.counts.ok) \([.counts[]] | add)"' "$T/out")" = "2 2" ]
bc report --month 2026-04
check "after reconcile the same report exits 0" [ $rc -eq 0 ]
check "... with the refund dated by its request (Apr 6), not by the reconcile" \
	grep -q "^2026-04-06,refund,c1,monthly,-100,-1.00,CAD,$RNO," "$T/out"
check "... and the charge dated Apr 5, the attempt that succeeded" grep -q "^2026-04-05,charge,c1,monthly,2900,.*,T$S1-3-1," "$T/out"

# ---- least privilege: the read-only verbs need neither the key nor writes ----
ROLE=books_reader
sql "DROP ROLE IF EXISTS $ROLE" 2>/dev/null
# The two lines of the README, verbatim but for the names.
sql "CREATE ROLE $ROLE LOGIN PASSWORD 'reader-pw';
     GRANT SELECT ON ALL TABLES IN SCHEMA public TO $ROLE;"
RURL="postgresql://$ROLE:reader-pw@$PGHOST:$PGPORT/$DBNAME"
write_config "$T/reader.yaml" "$RURL" "$T/no-such-dir/merchant.key"
CONF=$T/reader.yaml
for verb in "report --month 2026-03" "report summary --month 2026-03" "customer list" \
	"customer show c1" "subscription list" "subscription show $S1" "plans list"; do
	# shellcheck disable=SC2086 # the verb's words
	bc $verb
	check "billctl $verb: a SELECT-only role and no merchant key (exit 0)" \
		sh -c "[ $rc -eq 0 ] && [ -s '$T/out' ] && [ ! -s '$T/err' ]"
done
bc report --month 2026-03
cp "$T/out" "$T/reader.csv"
CONF= bc report --month 2026-03
check "... and the same report as the daemon's role" cmp -s "$T/out" "$T/reader.csv"
CONF=$T/reader.yaml
bc subscription pause "$S1"
check "the role cannot write: subscription pause refused, one line, exit 1" \
	sh -c "[ $rc -eq 1 ] && [ \$(wc -l <'$T/err') -eq 1 ] && grep -q 'permission denied' '$T/err'"
bc refund "$(pay "T$S1-1-1")" --amount 1
check "a verb that calls the gateway still needs the key: one line naming it, exit 1" \
	sh -c "[ $rc -eq 1 ] && [ \$(wc -l <'$T/err') -eq 1 ] && grep -q 'merchant_key_file' '$T/err'"
CONF=
sql "DROP OWNED BY $ROLE; DROP ROLE $ROLE"

# ---- a reversal at the gateway: paid, or another status ----
TODAY="--from 2026-01-01 --to 2026-04-30" # the quarter and April, on the billing clock
reversed() { curl -s -o /dev/null -X POST -d "{\"status\":$1}" "$FAKE/_fake/reversed"; }
# shellcheck disable=SC2086 # TODAY is two options
bc reconcile $TODAY
check "reconcile, reversed payments reported paid: the voided and the fully refunded charges are ok (clean)" \
	sh -c "[ $rc -eq 0 ] && grep -q ': clean\$' '$T/out'"
reversed 4
bc query --pay-order-id "$(pay "T$S2-2-1")"
check "the fake with reversed status 4: the voided charge's order now says 4" grep -q 'status *4' "$T/out"
# shellcheck disable=SC2086
bc reconcile $TODAY
check "reconcile, reversed payments reported with status 4: still consistent (clean, exit 0)" \
	sh -c "[ $rc -eq 0 ] && grep -q ': clean\$' '$T/out'"
# Our void row gone: the charge is no longer reversed on our side, so the
# gateway's 4 is unexplained.
sql "DELETE FROM refunds WHERE charge_id = (SELECT id FROM charges WHERE mch_order_no = 'T$S2-2-1')"
# shellcheck disable=SC2086
bc reconcile $TODAY
check "reconcile: an unexplained status is a mismatch naming it (exit 1)" \
	sh -c "[ $rc -eq 1 ] && grep -q '^mismatch *charge *T$S2-2-1 .*we say succeeded, the gateway.s status is 4' '$T/out'"
reversed 0

echo "1..$n"
[ $failed -eq 0 ]
