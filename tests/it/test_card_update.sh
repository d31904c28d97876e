#!/bin/sh
# test_card_update.sh: issue 13.7, card replacement, through billctl and
# billingd (its listener receiving the card page's returns) against a fresh
# PostgreSQL database and build/fakegw over HTTP, every charge judged by the
# gateway's own ledger: the old card is charged until the new binding is
# confirmed (by the return, or by cc_isbinding when the return is lost);
# then the next charge goes to the new binding id; exactly one charge per
# period across the switches; a replayed old return moves nothing back; a
# failed or expired replacement leaves the old card in use; bad requests are
# refused in one line; --dry-run changes nothing.
# TAP lines on stdout; needs the PG* variables of tests/run.sh.
set -u
B=${B:-build}
export TZ=America/Toronto # the configuration's timezone
T=$(mktemp -d)
DBNAME=t_card_update
. tests/cli_lib.sh
. tests/billingd.sh
DPID=
trap '[ -n "$DPID" ] && kill "$DPID" 2>/dev/null; cleanup' EXIT INT TERM

one_err_line() { [ "$(wc -l <"$T/err")" -eq 1 ] && [ ! -s "$T/out" ]; }
refused() { [ $rc -eq 1 ] && one_err_line && err_has "$1"; }
pass() {
	"$B/billingd" -c "$T/billing.yaml" --once --now "$1" 2>>"$T/billingd.log" ||
		echo "# billingd --once --now $1 failed"
}
ledger() { curl -s "$FAKE/_fake/ledger"; }
# charged PREFIX: "mchOrderNo customerId" of the gateway's paid orders of PREFIX.
charged() {
	ledger | jq -r --arg p "$1" '.orders[] | select(.payType == "pay" and
	       (.mchOrderNo | startswith($p))) | "\(.mchOrderNo) \(.customerId)"' | sort -V
}
requests() { ledger | jq -r ".requests.$1 // 0"; }
# page URL CARD [fail]: plays the customer on a card page; prints the return
# the gateway redirects to (not followed).
page() {
	curl -s -o /dev/null -w '%{redirect_url}' "$1&card=$2&expiry=0729${3:+&result=fail}"
}
# back URL: the customer's browser follows a return to our listener.
back() { curl -s -o /dev/null -w '%{http_code}' "$1"; }
cust() { sql "SELECT $2 FROM customers WHERE customer_id = '$1'"; }

setup_world || exit 1

# billingd's listener takes the returns: its return_url on a port it binds.
# Its clock stays before every charge below, so it charges nothing itself.
set_port() {
	sed -i "s|127.0.0.1:[0-9]*/iotpay/return|127.0.0.1:$1/iotpay/return|;
		s|address: 127.0.0.1:[0-9]*|address: 127.0.0.1:$1|" "$T/billing.yaml"
}
listener_ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/iotpay/x")" = 404 ]; }
billingd_up set_port listener_ready "$T/billing.yaml" "$T/listener.log" \
	--now 2026-01-01T00:00:00-05:00
check "billingd's listener is up" [ -n "$DPID" ]

T0=2026-03-02T09:00:00-05:00
# c1: enrolled through the page and its return (kept, to replay later).
bc --now "$T0" customer enrol c1 --email c1@example.com
R1=$(page "$(cat "$T/out")" 4501161234567214)
check "c1's first card is bound by its return" sh -c "[ $(back "$R1") = 302 ] && [ '$(cust c1 state)' = bound ]"
enrol c2 4501161234567214
enrol c4 4501161234567214
bc customer enrol c3
for c in c1 c2 c4; do
	bc --now "$T0" subscribe "$c" weekly --start "$T0" --trial-days 0
done
S1=$(sql "SELECT id FROM subscriptions WHERE customer_id = 'c1'")
S2=$(sql "SELECT id FROM subscriptions WHERE customer_id = 'c2'")
S4=$(sql "SELECT id FROM subscriptions WHERE customer_id = 'c4'")
pass 2026-03-02T09:01:00-05:00
check "week 0 charged to c1's own binding" [ "$(charged "T$S1-")" = "T$S1-0-1 c1" ]

# ---- refusals, one line each, nothing written or sent ----
ADDS=$(requests cc_adduser)
bc customer enrol c1
check "customer enrol of a bound customer: refused, pointing to update-card" refused "billctl customer update-card c1"
bc customer update-card nobody
check "update-card of an unknown customer: exit 1, one line" refused "unknown customer 'nobody'"
bc customer update-card c3
check "update-card of a customer never bound: exit 1, says to use customer enrol" \
	refused "billctl customer enrol c3"
bc --now 2026-03-08T10:00:00-04:00 customer update-card c1 --dry-run
check "update-card --dry-run: says what it would send, the binding c1~2, exit 0" \
	sh -c "[ $rc -eq 0 ] && grep -q '^dry run, nothing sent: would .*binding c1~2' '$T/out'"
check "--dry-run wrote nothing and sent nothing" \
	sh -c "[ '$(sql "SELECT count(*) FROM card_updates")' = 0 ] && [ '$(requests cc_adduser)' = $ADDS ]"

# ---- c1 replaces its card; the old one is charged until the new is bound ----
bc --now 2026-03-08T10:00:00-04:00 --json customer update-card c1 --reason "card stolen"
P2=$(jq -r .pay_url "$T/out")
check "update-card c1: a card page for binding c1~2, the old binding still in use" \
	sh -c "[ $rc -eq 0 ] && [ \"\$(jq -r .binding_id '$T/out')\" = 'c1~2' ] &&
	       [ \"\$(jq -r .card_in_use '$T/out')\" = c1 ] && [ -n '$P2' ]"
bc customer update-card c1
check "a second update-card while one is pending: refused, naming it and where its link is" \
	sh -c "[ $rc -eq 1 ] && [ \$(wc -l <'$T/err') -eq 1 ] && grep -q 'already has a card update pending (c1~2' '$T/err' &&
	       grep -q 'billctl customer show c1' '$T/err'"
bc --json customer show c1
check "customer show --json: the card in use (c1) and the pending update with its link" \
	sh -c "[ \"\$(jq -r .binding_id '$T/out')\" = c1 ] && [ \"\$(jq -r .card_update.binding_id '$T/out')\" = 'c1~2' ] &&
	       [ \"\$(jq -r .card_update.pay_url '$T/out')\" = '$P2' ]"
pass 2026-03-09T09:01:00-05:00
check "week 1, before the new card is bound: charged to the old binding c1" \
	[ "$(charged "T$S1-" | tail -n 1)" = "T$S1-1-1 c1" ]
R2=$(page "$P2" 4501169999990044)
check "the customer completes the page (the gateway binds c1~2)" \
	sh -c "echo '$R2' | grep -q 'retCode=SUCCESS' && echo '$R2' | grep -q 'customerId=c1~2'"
EV0=$(sql "SELECT count(*) FROM events WHERE type = 'customer.bound' AND customer_id = 'c1'")
check "its return reaches our listener" [ "$(back "$R2")" = 302 ]
check "the card in use is now c1~2, with the new card's details" \
	sh -c "[ '$(cust c1 binding_id)' = 'c1~2' ] && [ '$(cust c1 card_masked)' = 450116XXXXXX0044 ]"
check "the switch wrote customer.bound with the new binding id" \
	[ "$(sql "SELECT count(*) FROM events WHERE type = 'customer.bound' AND customer_id = 'c1'
	          AND body::jsonb->'data'->>'binding_id' = 'c1~2'")" = 1 ]
check "... and an audit row of the update (pending -> bound)" \
	[ "$(sql "SELECT count(*) FROM audit_log WHERE entity = 'card_updates' AND old_state = 'pending'
	          AND new_state = 'bound'")" = 1 ]
bc customer list --expiring 36500 --json
check "customer list --expiring shows the card in use" \
	[ "$(jq -r '.[] | select(.customer_id == "c1") | "\(.binding_id) \(.card) \(.card_expiry)"' "$T/out")" = "c1~2 450116XXXXXX0044 0729" ]
pass 2026-03-16T09:01:00-05:00
check "week 2, after the switch: charged to c1~2 at the gateway" \
	[ "$(charged "T$S1-" | tail -n 1)" = "T$S1-2-1 c1~2" ]
check "old returns replayed (c1's first card, c1~2's page) are accepted and change nothing" \
	sh -c "[ $(back "$R1") = 302 ] && [ $(back "$R2") = 302 ] && [ '$(cust c1 binding_id)' = 'c1~2' ] &&
	       [ $(sql "SELECT count(*) FROM events WHERE type = 'customer.bound' AND customer_id = 'c1'") -eq $((EV0 + 1)) ]"

# ---- a second replacement whose return is lost: bound by cc_isbinding ----
bc --now 2026-03-17T10:00:00-04:00 customer update-card c1
check "a second update-card: binding c1~3" [ "$(sql "SELECT binding_id FROM card_updates WHERE state = 'pending'")" = 'c1~3' ]
R3=$(page "$(cat "$T/out")" 4501161234567214)
pass 2026-03-23T09:01:00-04:00
check "the return lost, billingd's cc_isbinding follow-up switches to c1~3; week 3 goes there" \
	[ "$(cust c1 binding_id) $(charged "T$S1-" | tail -n 1)" = "c1~3 T$S1-3-1 c1~3" ]
check "replaying c1~2's return after that does not move the card back" \
	sh -c "[ $(back "$R2") = 302 ] && [ '$(cust c1 binding_id)' = 'c1~3' ]"
check "the late return of c1~3 changes nothing either" \
	sh -c "[ $(back "$R3") = 302 ] && [ '$(cust c1 binding_id)' = 'c1~3' ]"
pass 2026-03-30T09:01:00-04:00
check "exactly one charge per period across both switches: old, old, c1~2, c1~3, c1~3" \
	[ "$(charged "T$S1-" | tr '\n' ' ')" = "T$S1-0-1 c1 T$S1-1-1 c1 T$S1-2-1 c1~2 T$S1-3-1 c1~3 T$S1-4-1 c1~3 " ]

# ---- a failed and an expired replacement leave the old card in use ----
bc --now 2026-03-17T10:00:00-04:00 customer update-card c2
R=$(page "$(cat "$T/out")" 4501161234567214 fail)
back "$R" >/dev/null
check "c2's card page fails: the update is failed, the card in use still c2" \
	sh -c "[ '$(sql "SELECT state FROM card_updates WHERE customer_id = 'c2'")' = failed ] &&
	       [ '$(cust c2 binding_id)' = '' ] && [ '$(cust c2 state)' = bound ]"
bc --now 2026-03-17T10:00:00-04:00 customer update-card c4
pass 2026-03-23T09:01:00-04:00
check "c4's update past its expiry, not bound at the gateway: failed; nothing switched" \
	sh -c "[ '$(sql "SELECT state FROM card_updates WHERE customer_id = 'c4'")' = failed ] && [ '$(cust c4 binding_id)' = '' ]"
pass 2026-03-30T09:01:00-04:00
check "c2 and c4 were charged on their own bindings, once a week" \
	[ "$(charged "T$S2-" | cut -d' ' -f2 | uniq -c | tr -s ' ') $(charged "T$S4-" | cut -d' ' -f2 | uniq -c | tr -s ' ')" = " 5 c2  5 c4" ]
bc --now 2026-03-31T10:00:00-04:00 customer update-card c4
check "after a failed update a new one is allowed: c4~3" \
	sh -c "[ $rc -eq 0 ] && [ '$(sql "SELECT binding_id FROM card_updates WHERE customer_id = 'c4' AND state = 'pending'")' = 'c4~3' ]"
bc customer history c1
check "customer history lists the card updates" sh -c "grep -q '^.* card_update *c1~2 .*pending -> bound' '$T/out'"

echo "1..$n"
[ "$failed" -eq 0 ]
