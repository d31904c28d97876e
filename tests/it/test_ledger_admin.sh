#!/bin/sh
# test_ledger_admin.sh: issue 13, the admin's side held to the charge
# protocol's standard, through billctl and billingd against a fresh
# PostgreSQL database and build/fakegw over HTTP: refunds and voids whose
# outcome is unknown are resolved before anything else, no completed card
# page is lost, a customer's history with actors and reasons.
# TAP lines on stdout; needs the PG* variables of tests/run.sh.
set -u
B=${B:-build}
export TZ=America/Toronto # the configuration's timezone
T=$(mktemp -d)
DBNAME=t_ledger_admin
. tests/cli_lib.sh
trap cleanup EXIT INT TERM

setup_world || exit 1
check "c1 enrols through the hosted page" enrol c1 4501161234567214
fault() { curl -s -o /dev/null -X POST -d "{\"endpoint\":\"$1\",\"kind\":\"$2\",\"count\":1}" "$FAKE/_fake/faults"; }
ledger() { curl -s "$FAKE/_fake/ledger"; }
# refunds_of PAY: "amount payType" of the gateway's refund and void orders of PAY.
refunds_of() { ledger | jq -r --arg p "$1" '.orders[] | select(.originalOrderId == $p) | "\(.amount) \(.payType)"'; }
requests() { ledger | jq -r ".requests.$1"; }

bc --now 2026-01-05T09:00:00-05:00 subscribe c1 monthly --trial-days 0 --start 2026-01-05T09:00:00-05:00
S1=$(sed -n 's/^subscription \([0-9]*\):.*/\1/p' "$T/out")
for now in 2026-01-06T09:00:00-05:00 2026-02-06T09:00:00-05:00 2026-03-06T09:00:00-05:00; do
	"$B/billingd" -c "$T/billing.yaml" --once --now "$now" 2>>"$T/billingd.log"
done
pay() { sql "SELECT pay_order_id FROM charges WHERE mch_order_no = '$1'"; }
P0=$(pay "T$S1-0-1")
P1=$(pay "T$S1-1-1")
P2=$(pay "T$S1-2-1")
check "three months charged for c1" sh -c "[ -n '$P0' ] && [ -n '$P1' ] && [ -n '$P2' ]"

# ---- point 2: unknown is resolved before anything else ----
fault cc_refund drop_after
bc refund "$P0" --amount 100
check "a refund whose answer is lost: outcome unknown, exit 1" sh -c "[ $rc -eq 1 ] && grep -q 'outcome unknown' '$T/err'"
check "... the message says not to retry and what resolves it" \
	sh -c "grep -q 'do not retry' '$T/err' && grep -q 'billingd' '$T/err' && grep -q 'reconcile' '$T/err'"
R1=$(grep -o 'TR[0-9]*' "$T/err" | head -n 1)
bc refund "$P0" --amount 100
check "the same refund run again: exit 0, it is the earlier one, nothing new sent" \
	sh -c "[ $rc -eq 0 ] && grep -q '^refund $R1: 1.00 CAD of $P0 succeeded' '$T/out' && grep -q 'nothing new was sent' '$T/out'"
check "the gateway refunded once: one refund order of 1.00 on the charge" [ "$(refunds_of "$P0")" = "100 refund" ]
check "our ledger: one refund, succeeded" \
	[ "$(sql "SELECT count(*) || ' ' || min(state) FROM refunds WHERE charge_id = (SELECT id FROM charges WHERE pay_order_id = '$P0')")" = "1 succeeded" ]

# A void whose answer is lost, then a refund of the same charge: the void is
# found made, so the refund is not sent (it would exceed the charge anyway).
fault cc_void drop_after
bc void "$P1"
check "a void whose answer is lost: outcome unknown, exit 1" sh -c "[ $rc -eq 1 ] && grep -q 'outcome unknown' '$T/err'"
V1=$(grep -o 'TR[0-9]*' "$T/err" | head -n 1)
BEFORE=$(requests cc_refund)
bc refund "$P1" --amount 100
check "a refund of a charge whose void is unknown: the void resolved first and reported, no refund sent" \
	sh -c "[ $rc -eq 0 ] && grep -q '^void $V1: 29.00 CAD of $P1 succeeded' '$T/out' && [ '$(requests cc_refund)' = '$BEFORE' ]"
check "the gateway: one void on that charge, nothing else" [ "$(refunds_of "$P1")" = "2900 void" ]

# An unknown refund cc_query cannot settle: nothing new is sent.
fault cc_refund drop_after
bc refund "$P2" --amount 200
R3=$(grep -o 'TR[0-9]*' "$T/err" | head -n 1)
# (every cc_query of the next few: the client may ask again after a 5xx)
curl -s -o /dev/null -X POST -d '{"endpoint":"cc_query","kind":"http5xx","count":20}' "$FAKE/_fake/faults"
BEFORE=$(requests cc_refund)
bc refund "$P2" --amount 200
check "while cc_query cannot settle it, a new refund is refused (exit 1, do not retry), nothing sent" \
	sh -c "[ $rc -eq 1 ] && grep -q '$R3' '$T/err' && grep -q 'do not retry' '$T/err' && [ '$(requests cc_refund)' = '$BEFORE' ] && [ \$(wc -l <'$T/err') -eq 1 ]"
check "... and nothing half-written: still one refund row on the charge" \
	[ "$(sql "SELECT count(*) FROM refunds WHERE charge_id = (SELECT id FROM charges WHERE pay_order_id = '$P2')")" = 1 ]
curl -s -o /dev/null -X POST -d '{"clear":true}' "$FAKE/_fake/faults"
"$B/billingd" -c "$T/billing.yaml" --once --now 2026-03-06T10:00:00-05:00 2>>"$T/billingd.log"
check "billingd's pass resolves the unknown refund (succeeded)" \
	[ "$(sql "SELECT state FROM refunds WHERE mch_refund_no = '$R3'")" = succeeded ]
check "... dated by its request on the billing clock, not by the pass" \
	[ "$(sql "SELECT settled_at = requested_at FROM refunds WHERE mch_refund_no = '$R3'")" = t ]
check "the gateway refunded it once" [ "$(refunds_of "$P2")" = "200 refund" ]

# ---- point 6: no completed card page is lost ----
# 200 customers complete the card page, but its return never reaches us (no
# call to /iotpay/return); one never completes it. One pass after their
# expiry binds and charges all 200, and fails only the one.
T0=2026-05-01T10:00:00-04:00
i=1
while [ $i -le 200 ]; do
	bc --now "$T0" customer enrol "p$i"
	curl -s -o /dev/null "$(cat "$T/out")&card=4501161234567214&expiry=0728"
	bc --now "$T0" subscribe "p$i" weekly --trial-days 0 --start "$T0" --when-bound
	i=$((i + 1))
done
bc --now "$T0" customer enrol never
bc --now "$T0" subscribe never weekly --trial-days 0 --start "$T0" --when-bound
check "201 enrolments pending in our ledger (the returns were lost)" \
	[ "$(sql "SELECT count(*) FROM customers WHERE state = 'pending'")" = 201 ]
BEFORE=$(requests cc_isbinding)
"$B/billingd" -c "$T/billing.yaml" --once --now 2026-05-04T11:00:00-04:00 2>>"$T/billingd.log"
check "one pass after the expiry: all 200 bound" \
	[ "$(sql "SELECT count(*) FROM customers WHERE customer_id LIKE 'p%' AND state = 'bound'")" = 200 ]
PAID=$(sql "SELECT count(*) FROM charges WHERE customer_id LIKE 'p%' AND state = 'succeeded'")
GWPAID=$(ledger | jq '[.orders[] | select(.customerId | startswith("p")) | select(.payType == "pay")] | length')
check "... and charged in that pass (200 succeeded charges, 200 paid orders at the gateway: $PAID, $GWPAID)" \
	[ "$PAID $GWPAID" = "200 200" ]
check "the enrolment never completed: failed after cc_isbinding said not bound" \
	[ "$(sql "SELECT state FROM customers WHERE customer_id = 'never'")" = failed ]
check "one cc_isbinding per pending enrolment in that pass" [ $(($(requests cc_isbinding) - BEFORE)) -eq 201 ]
check "nothing charged for the failed enrolment" \
	[ "$(sql "SELECT count(*) FROM charges WHERE customer_id = 'never'")" = 0 ]

# ---- point 9: history, with the actor and the reason ----
# Enrolment, trial, decline, retry, refund, void and plan change, then one
# timeline that shows every step in order.
H0=2026-06-01T10:00:00-04:00
bc --now "$H0" customer enrol h1 --reason "signed up by phone"
curl -s -o /dev/null "$(cat "$T/out")&card=4501161234567214&expiry=0728"
bc --now "$H0" customer check h1
bc --now "$H0" subscribe h1 monthly --start "$H0" --reason "phone order #881"
HS=$(sed -n 's/^subscription \([0-9]*\):.*/\1/p' "$T/out")
curl -s -o /dev/null -X POST -d '{"customerId":"h1","count":1}' "$FAKE/_fake/decline"
"$B/billingd" -c "$T/billing.yaml" --once --now 2026-06-15T10:30:00-04:00 2>>"$T/billingd.log"
"$B/billingd" -c "$T/billing.yaml" --once --now 2026-06-16T10:30:00-04:00 2>>"$T/billingd.log"
"$B/billingd" -c "$T/billing.yaml" --once --now 2026-07-15T10:30:00-04:00 2>>"$T/billingd.log"
HP1=$(pay "T$HS-0-2")
HP2=$(pay "T$HS-1-1")
check "h1: the trial's first charge declined, its retry paid, the next month paid" \
	sh -c "[ -n '$HP1' ] && [ -n '$HP2' ] && [ '$(sql "SELECT state FROM charges WHERE mch_order_no = 'T$HS-0-1'")' = failed ]"
bc --now 2026-07-16T09:00:00-04:00 refund "$HP1" --amount 500 --reason "late delivery"
HR=$(grep -o 'TR[0-9]*' "$T/out" | head -n 1)
bc --now 2026-07-16T09:05:00-04:00 void "$HP2" --reason "charged in error"
HV=$(grep -o 'TR[0-9]*' "$T/out" | head -n 1)
bc --now 2026-07-16T09:10:00-04:00 subscription change-plan "$HS" annual --reason "upgrade to annual"
check "refund, void and plan change made with a reason" [ $rc -eq 0 ]
bc customer history h1 --reason "ignored by a read"
check "customer history: exit 0, a table" sh -c "[ $rc -eq 0 ] && head -n 1 '$T/out' | grep -q '^AT '"
bc --json customer history h1
jq -r '.history[] | [.entity, .ref, .old_state, .new_state] | map(select(. != "")) | join(" ")' "$T/out" |
	sed 's/ *$//' >"$T/steps"
cat >"$T/want" <<EOS
customer h1 pending
customer h1 pending bound
subscription $HS trialing
charge T$HS-0-1 pending
charge T$HS-0-1 pending failed
subscription $HS trialing past_due
charge T$HS-0-2 pending
charge T$HS-0-2 pending succeeded
subscription $HS past_due active
charge T$HS-1-1 pending
charge T$HS-1-1 pending succeeded
refund $HR pending
refund $HR pending succeeded
void $HV pending
void $HV pending succeeded
subscription $HS active active
EOS
if cmp -s "$T/want" "$T/steps"; then
	ok "customer history --json: enrolment, binding, trial, decline, retry, refund, void, plan change, in order"
else
	not_ok "customer history --json: every step in order"
	diff "$T/want" "$T/steps" | sed 's/^/#   /'
fi
step() { jq -r --arg r "$1" --arg s "$2" ".history[] | select(.ref == \$r and .new_state == \$s) | $3" "$T/out" | tail -n 1; }
check "the enrolment carries its actor and reason" \
	[ "$(step h1 pending '.actor + "|" + .reason')" = "billctl:$(id -un)|signed up by phone" ]
check "the binding (billctl customer check) has no reason: none was given" [ "$(step h1 bound .reason)" = "" ]
check "the subscription's creation: its plan and reason" \
	[ "$(jq -r ".history[] | select(.entity == \"subscription\" and .old_state == \"\") | .detail + \"|\" + .reason" "$T/out")" = "monthly v1|phone order #881" ]
check "the decline: the gateway's message, no pay order; by billingd" \
	sh -c "[ -n '$(step "T$HS-0-1" failed .ret_msg)' ] && case '$(step "T$HS-0-1" failed .actor)' in billctl*) false ;; *) true ;; esac"
check "the retry that paid: its pay order and its billing time (the attempt, on --now)" \
	[ "$(step "T$HS-0-2" succeeded '.pay_order_id + " " + .billing_time')" = "$HP1 2026-06-16T10:30:00-04:00" ]
check "the refund: -5.00 of its charge, with the reason" \
	[ "$(step "$HR" succeeded '"\(.amount_cents) \(.of) \(.reason)"')" = "500 T$HS-0-2 late delivery" ]
check "the void: of the next month's charge, with the reason" \
	[ "$(step "$HV" succeeded '"\(.of) \(.reason)"')" = "T$HS-1-1 charged in error" ]
check "the plan change: audited with what changed and the reason" \
	[ "$(jq -r '.history[-1] | .detail + "|" + .reason' "$T/out")" = "plan change to annual v1 at the period end|upgrade to annual" ]
bc subscription show "$HS"
check "subscription show: the voided charge is 'voided', never 'succeeded'" \
	sh -c "grep 'T$HS-1-1' '$T/out' | grep -q ' voided ' && ! grep 'T$HS-1-1' '$T/out' | grep -q succeeded"
check "subscription show: the refund and the void listed under their charges" \
	sh -c "grep -A1 'T$HS-0-2' '$T/out' | grep -q 'refund $HR' && grep -A1 'T$HS-1-1' '$T/out' | grep -q 'void $HV'"
bc --json subscription show "$HS"
check "subscription show --json: refunds under each charge" \
	[ "$(jq -r ".charges[] | select(.mch_order_no == \"T$HS-1-1\") | .state + \" \" + .refunds[0].type + \" \" + .refunds[0].mch_refund_no" "$T/out")" = "voided void $HV" ]
bc subscription cancel "$HS" --at-period-end --reason "moving away"
check "cancel at the period end: audited with the reason" \
	[ "$(sql "SELECT detail || '|' || reason FROM audit_log WHERE entity = 'subscriptions' AND entity_id = '$HS' ORDER BY id DESC LIMIT 1")" = "cancel at the period end|moving away" ]
bc customer show h1 --reason "$(printf 'two\nlines')"
check "--reason with a control character: exit 2, one line naming it" \
	sh -c "[ $rc -eq 2 ] && [ \$(wc -l <'$T/err') -eq 1 ] && grep -q -- '--reason' '$T/err'"
bc customer history nobody
check "history of an unknown customer: exit 1, one line" sh -c "[ $rc -eq 1 ] && grep -q \"unknown customer 'nobody'\" '$T/err'"

echo "1..$n"
[ $failed -eq 0 ]
