#!/bin/sh
# test_admin.sh: issue 13's admin verbs as safe as the daemon's own charge,
# through billctl and billingd against a fresh PostgreSQL database and
# build/fakegw over HTTP, each money question answered by the gateway's own
# ledger: pause and resume keep paid time (inside and across a period's end,
# and a trial's remaining days); `charge` charges only what is owed;
# `subscribe` refuses what cannot be billed and bills a backdated start's
# current period only; every money-moving verb's --dry-run leaves both
# ledgers byte for byte; a cancel at the period's end is withdrawn with
# `subscription keep` and shows "ends at" until then.
# TAP lines on stdout; needs the PG* variables of tests/run.sh.
set -u
B=${B:-build}
export TZ=America/Toronto # the configuration's timezone
T=$(mktemp -d)
DBNAME=t_admin
. tests/cli_lib.sh
trap cleanup EXIT INT TERM

one_err_line() { [ "$(wc -l <"$T/err")" -eq 1 ] && [ ! -s "$T/out" ]; }
# refused PATTERN: the last billctl exited 1 with one error line matching PATTERN.
refused() { [ $rc -eq 1 ] && one_err_line && err_has "$1"; }
# sub NOW ARGS...: subscribes on the billing clock at NOW; prints the id.
sub() {
	now=$1
	shift
	bc --now "$now" subscribe "$@"
	sed -n 's/^subscription \([0-9]*\):.*/\1/p' "$T/out"
}
# pass NOW: one billingd pass on the billing clock at NOW.
pass() {
	"$B/billingd" -c "$T/billing.yaml" --once --now "$1" 2>>"$T/billingd.log" ||
		echo "# billingd --once --now $1 failed"
}
# orders PREFIX: the gateway's paid charge orders whose mchOrderNo starts with PREFIX.
orders() {
	curl -s "$FAKE/_fake/ledger" |
		jq -r --arg p "$1" '.orders[] | select(.payType == "pay" and (.status == 2 or .status == 3)
		       and (.mchOrderNo | startswith($p))) | "\(.mchOrderNo) \(.amount)"' | sort
}
purchases() { curl -s "$FAKE/_fake/ledger" | jq -r '.requests.cc_purchasewithtoken // 0'; }
col() { sql "SELECT $2 FROM subscriptions WHERE id = $1"; }
# ts COLUMN ID: a subscription's time as Toronto's local time.
ts() { sql "SELECT to_char($1 AT TIME ZONE 'America/Toronto', 'YYYY-MM-DD\"T\"HH24:MI:SS') FROM subscriptions WHERE id = $2"; }

setup_world || exit 1
if enrol c1 4501161234567214 && enrol c2 4501169999990044 && enrol c4 4501161234567214; then
	ok "c1, c2, c4 enrol through the hosted page"
else
	not_ok "c1, c2, c4 enrol through the hosted page"
fi

# ---- 1. pause and resume keep paid time ----
A=$(sub 2026-01-10T09:00:00-05:00 c1 annual --start 2026-01-10T09:00:00-05:00)
pass 2026-01-10T09:01:00-05:00
check "annual subscription of c1 paid for its first year (290.00 at the gateway)" \
	[ "$(orders "T$A-")" = "T$A-0-1 29000" ]
bc --now 2026-03-01T12:00:00-05:00 subscription pause "$A"
check "pause: paused, no charge until resumed" \
	sh -c "[ $rc -eq 0 ] && grep -q 'paused, no charge until resumed' '$T/out'"
pass 2026-04-01T12:00:00-04:00
bc --now 2026-06-01T12:00:00-04:00 subscription resume "$A"
check "resume before the paid year's end: the next charge is at its end, 290.00" \
	sh -c "[ $rc -eq 0 ] && grep -q 'active, next charge 2027-01-10T09:00:00-05:00 (290.00 CAD)' '$T/out'"
pass 2026-06-01T12:01:00-04:00
check "resume before the paid year's end: nothing sent to the gateway" \
	[ "$(orders "T$A-")" = "T$A-0-1 29000" ]
bc --now 2026-11-01T12:00:00-04:00 subscription pause "$A"
pass 2027-01-10T09:01:00-05:00
check "paused across the period's end: nothing charged at the end" \
	[ "$(orders "T$A-")" = "T$A-0-1 29000" ]
bc --now 2027-03-01T10:00:00-05:00 subscription resume "$A"
check "resume after the paid year's end: a new period starts at the resume, due now" \
	sh -c "[ $rc -eq 0 ] && grep -q 'active, next charge 2027-03-01T10:00:00-05:00 (290.00 CAD)' '$T/out'"
pass 2027-03-01T10:01:00-05:00
check "the new period charged once, the paused months never (gateway: two orders)" \
	[ "$(orders "T$A-")" = "$(printf 'T%s-0-1 29000\nT%s-1-1 29000' "$A" "$A")" ]
check "the anchor moved to the resume: paid until 2028-03-01 10:00" \
	[ "$(ts period_end "$A")" = 2028-03-01T10:00:00 ]
pass 2027-06-01T10:00:00-04:00
check "nothing more within the new period" [ "$(orders "T$A-" | wc -l)" -eq 2 ]

# A trial paused with 10 days left keeps them.
TR=$(sub 2026-01-01T00:00:00-05:00 c2 monthly --start 2026-01-01T00:00:00-05:00)
check "c2 monthly: a 14-day trial until Jan 15" [ "$(ts trial_end "$TR")" = 2026-01-15T00:00:00 ]
bc --now 2026-01-05T00:00:00-05:00 subscription pause "$TR"
pass 2026-01-20T00:00:00-05:00
bc --now 2026-02-01T00:00:00-05:00 subscription resume "$TR"
check "resume of a paused trial: trialing, its 10 days left from the resume (Feb 11)" \
	sh -c "[ $rc -eq 0 ] && grep -q 'trialing, next charge 2026-02-11T00:00:00-05:00 (29.00 CAD)' '$T/out'"
pass 2026-02-01T00:01:00-05:00
check "nothing charged during the trial's remaining days" [ -z "$(orders "T$TR-")" ]
pass 2026-02-11T00:01:00-05:00
check "charged when the remaining days are over" [ "$(orders "T$TR-")" = "T$TR-0-1 2900" ]
bc --now 2026-02-12T00:00:00-05:00 subscription resume "$TR"
check "resume of an active subscription: refused, one line" refused 'only a paused subscription'

# ---- 3. charge charges only what is owed ----
N=$(purchases)
bc --now 2027-06-01T10:00:00-04:00 charge "$A"
check "charge of a paid-up subscription: refused, naming the next charge" \
	refused "paid up: nothing is owed; its next charge (290.00 CAD) is due 2028-03-01T10:00:00-05:00"
check "charge of a paid-up subscription: nothing sent to the gateway" [ "$(purchases)" -eq "$N" ]
W=$(sub 2026-05-01T09:00:00-04:00 c4 monthly --start 2026-05-01T09:00:00-04:00)
bc --now 2026-05-03T09:00:00-04:00 charge "$W"
check "charge of a trialing subscription: refused, naming --end-trial" \
	refused "trialing: nothing is owed; its first charge (29.00 CAD) is due 2026-05-15T09:00:00-04:00 (--end-trial"
check "charge of a trialing subscription: nothing sent" [ "$(purchases)" -eq "$N" ]
bc --now 2026-05-03T09:00:00-04:00 charge "$W" --end-trial
check "charge --end-trial: the trial ends and the first period is charged now" \
	sh -c "[ $rc -eq 0 ] && grep -q '^charge T$W-0-1: succeeded' '$T/out'"
check "charge --end-trial: the period runs from now (next charge Jun 3 09:00)" \
	[ "$(ts next_charge_at "$W")" = 2026-06-03T09:00:00 ]
bc --now 2026-05-20T09:00:00-04:00 charge "$W"
check "charge again within the paid month: refused, the gateway has one order" \
	sh -c "[ $rc -eq 1 ] && [ '$(orders "T$W-")' = 'T$W-0-1 2900' ]"
curl -s -o /dev/null -X POST -d '{"customerId":"c4","count":1}' "$FAKE/_fake/decline"
pass 2026-06-03T09:01:00-04:00
check "a declined renewal leaves c4's subscription past_due" [ "$(col "$W" state)" = past_due ]
bc --now 2026-06-03T10:00:00-04:00 charge "$W"
check "charge of a past_due period: charged now (before its retry)" \
	sh -c "[ $rc -eq 0 ] && grep -q '^charge T$W-1-2: succeeded' '$T/out'"

# ---- 4. subscribe refuses what cannot be billed ----
bc customer enrol c3
check "c3 enrols (pending: completes the page only a month later)" [ $rc -eq 0 ]
PAGE3=$(cat "$T/out")
bc --now 2026-05-01T00:00:00-04:00 subscribe c3 weekly
check "subscribe a customer with no card bound: refused, naming --when-bound" refused '--when-bound'
bc --now 2026-05-01T00:00:00-04:00 subscribe nobody weekly --when-bound
check "subscribe --when-bound of an unknown customer: refused" refused "unknown customer 'nobody'"
P=$(sub 2026-05-01T00:00:00-04:00 c3 weekly --when-bound)
check "subscribe --when-bound: a pending enrolment is accepted" [ -n "$P" ]
pass 2026-05-01T00:01:00-04:00
check "nothing charged while the card is not bound" [ -z "$(orders "T$P-")" ]
curl -s -o /dev/null "$PAGE3&card=4501161234567214&expiry=0728"
bc customer check c3
# The pass starts as a second ends: the time it runs at is still --now's,
# however long billingd takes to start.
while [ "$(date +%N | cut -c1-2)" -lt 99 ]; do sleep 0.005; done
pass 2026-06-05T10:00:00-04:00
pass 2026-06-05T10:01:00-04:00
check "bound five weeks later: charged once, the wait not billed in arrears" \
	[ "$(orders "T$P-")" = "T$P-0-1 6450" ]
check "its calendar starts at the pass that found it bound (next charge Jun 12 10:00)" \
	[ "$(ts next_charge_at "$P")" = 2026-06-12T10:00:00 ]
bc --now 2027-06-01T10:00:00-04:00 subscribe c1 annual
check "a second live annual subscription of c1: refused, naming the first" \
	refused "already has subscription $A on plan annual: --allow-duplicate"
D=$(sub 2027-06-01T10:00:00-04:00 c1 annual --allow-duplicate --trial-days 5)
check "--allow-duplicate subscribes again" [ -n "$D" ]
bc --now 2027-06-01T10:00:00-04:00 subscription cancel "$D"

BK=$(sub 2026-05-24T10:00:00-04:00 c2 weekly --start 2026-05-01T09:00:00-04:00)
check "a start 3 weeks back: the output says 3 earlier periods are not billed, and how much" \
	grep -q 'started 3 periods before now: only the current one is billed (--bill-arrears would bill 193.50 CAD more)' "$T/out"
check "it is due at the start of the period that contains now (May 22)" \
	[ "$(ts next_charge_at "$BK")" = 2026-05-22T09:00:00 ]
pass 2026-05-24T10:01:00-04:00
pass 2026-05-24T10:02:00-04:00
check "a backdated start charges one period (the gateway has one order, period 3)" \
	[ "$(orders "T$BK-")" = "T$BK-3-1 6450" ]
check "next charge a week after the current period's start (May 29)" \
	[ "$(ts next_charge_at "$BK")" = 2026-05-29T09:00:00 ]
AR=$(sub 2026-05-24T10:00:00-04:00 c4 weekly --start 2026-05-01T09:00:00-04:00 --bill-arrears)
check "--bill-arrears: the output says how many earlier periods and how much" \
	grep -q '^3 earlier periods billed in arrears too: 193.50 CAD' "$T/out"
for i in 1 2 3 4 5; do pass "2026-05-24T10:0$i:00-04:00"; done
check "--bill-arrears: the earlier periods and the current one charged, nothing more" \
	[ "$(orders "T$AR-" | wc -l)" -eq 4 ]

# ---- 5. --dry-run: both ledgers byte for byte ----
PAY=$(sql "SELECT pay_order_id FROM charges WHERE mch_order_no = 'T$A-1-1'")
bc --now 2027-06-02T10:00:00-04:00 subscription pause "$TR"
dump() {
	for t in customers subscriptions charges refunds audit_log; do
		sql "SELECT * FROM $t ORDER BY 1"
	done >"$1.db"
	curl -s "$FAKE/_fake/ledger" >"$1.gw"
}
dump "$T/before"
# dry DESCRIPTION PATTERN ARGS...: billctl ARGS exits 0 and prints PATTERN.
dry() {
	d=$1
	p=$2
	shift 2
	bc --now 2027-06-02T12:00:00-04:00 "$@" --dry-run
	if [ $rc -eq 0 ] && has "$p"; then ok "--dry-run $d"; else not_ok "--dry-run $d"; fi
}
dry "charge: the amount and the period owed" \
	"would charge subscription $BK (customer c2) 64.50 CAD for period 4 at 2027-06-02T12:00:00-04:00" \
	charge "$BK"
dry "refund: the amount" "would refund 12.34 CAD of $PAY" refund "$PAY" --amount 1234
dry "refund without --amount: all that remains" "would refund 290.00 CAD of $PAY" refund "$PAY"
dry "void: the whole charge" "would void 290.00 CAD of $PAY" void "$PAY"
dry "pay-link: the amount" "would create a payment link of 5.00 CAD for customer c1" pay-link c1 500
dry "subscribe: what it would create" \
	"would create a subscription: c4 on annual (v1, 290.00 CAD), active, next charge 2027-06-02T12:00:00-04:00" \
	subscribe c4 annual
dry "subscription pause" "nothing changed: subscription $A: .* paused, no charge" \
	subscription pause "$A"
dry "subscription resume: when the next charge is, how much" \
	"nothing changed: subscription $TR: .*active, next charge 2027-06-02T12:00:00-04:00 (29.00 CAD)" \
	subscription resume "$TR"
dry "subscription cancel" "nothing changed: subscription $A: .* canceled" subscription cancel "$A"
dry "subscription cancel --at-period-end: ends at" \
	"nothing changed: subscription $A: .* ends at 2028-03-01T10:00:00-05:00" \
	subscription cancel "$A" --at-period-end
dry "subscription change-plan" "nothing changed: subscription $BK: .*then plan monthly" \
	subscription change-plan "$BK" monthly
dump "$T/after"
check "--dry-run: our tables unchanged, byte for byte" cmp -s "$T/before.db" "$T/after.db"
check "--dry-run: the gateway's ledger unchanged, byte for byte" cmp -s "$T/before.gw" "$T/after.gw"
bc --now 2027-06-02T12:00:00-04:00 refund NOSUCH --dry-run
check "--dry-run of what would be refused: the same one-line error, exit 1" refused 'no succeeded charge'
bc --now 2027-06-02T12:00:00-04:00 charge "$A" --dry-run
check "charge --dry-run of a paid-up subscription: refused as the charge would be" refused 'paid up'

# ---- 8. a cancel at the period's end, withdrawn ----
bc --now 2027-06-02T12:00:00-04:00 subscription cancel "$A" --at-period-end
check "cancel --at-period-end: shows 'ends at', never 'next charge'" \
	sh -c "[ $rc -eq 0 ] && grep -q 'active, ends at 2028-03-01T10:00:00-05:00' '$T/out' && ! grep -q 'next charge' '$T/out'"
bc --json subscription show "$A"
check "subscription show --json: ends_at set, next_charge_at null" \
	sh -c "grep -q '\"next_charge_at\":null' '$T/out' && grep -q '\"ends_at\":\"2028-03-01T10:00:00-05:00\"' '$T/out'"
bc subscription list --customer c1
check "subscription list: 'ends at' in the NEXT column" grep -q "^$A .* ends at 2028-03-01" "$T/out"
bc --now 2027-06-02T12:00:00-04:00 subscription resume "$A"
check "resume of a subscription canceling at its end: refused, naming keep" refused 'subscription keep'
bc --now 2027-06-02T12:00:00-04:00 subscription keep "$A"
check "subscription keep: the cancel is withdrawn, the next charge shown again" \
	sh -c "[ $rc -eq 0 ] && grep -q 'active, next charge 2028-03-01T10:00:00-05:00 (290.00 CAD)' '$T/out'"
bc --now 2027-06-02T12:00:00-04:00 subscription keep "$A"
check "keep of a subscription not canceling: refused, one line" refused 'only a subscription canceling'
pass 2028-03-01T10:01:00-05:00
check "kept: charged at the period's end as before" [ "$(orders "T$A-" | wc -l)" -eq 3 ]
# (the rows of a cancel at the period's end and its withdrawal keep the state)
AUD=$(sql "SELECT string_agg(new_state, ' ' ORDER BY id) FROM audit_log WHERE entity = 'subscriptions' AND entity_id = '$A' AND old_state IS DISTINCT FROM new_state")
check "every state change of the subscription has its audit row ($AUD)" \
	[ "$AUD" = "active paused active paused active" ]

echo "1..$n"
[ "$failed" -eq 0 ]
