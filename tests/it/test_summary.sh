#!/bin/sh
# test_summary.sh: billctl report summary against a hand-computed fixture:
# two months of a small ledger written straight into a fresh database
# (triggers off, so that the audit log's dates are the fixture's), each
# figure of each month and plan checked against the value worked out by
# hand in the comments below. TAP lines on stdout; needs the PG* variables.
set -u
B=${B:-build}
export TZ=America/Toronto
T=$(mktemp -d)
DBNAME=t_summary
. tests/cli_lib.sh
trap cleanup EXIT INT TERM

FAKE=http://127.0.0.1:9 # no gateway: the summary only reads the ledger
fresh_db || { echo "not ok 1 - createdb $DBNAME"; exit 1; }
printf '%s\n' "$KEY" >"$T/merchant.key"
chmod 600 "$T/merchant.key"
write_config "$T/billing.yaml" "$URL" "$T/merchant.key"
bc migrate
bc plans sync
check "migrate and plans sync" [ $rc -eq 0 ]

# Subscriptions (audit log): sa monthly, active since Dec; sb monthly, new
# Jan 10, canceled Feb 20; sc annual, new (trialing) Jan 5, active Jan 19,
# paused Feb 10; sd monthly, new Feb 3, ended Feb 25.
# Charges: Jan: sa p1 29.00; sb p0 declined Jan 10 then paid Jan 11; sc p0
# 290.00; a link 12.34 (voided Jan 26) and a link 5.00 at 23:30 on Jan 31
# (Feb 1 in UTC). Feb: sa p2 29.00; sb p1 declined twice; sd p0 29.00.
# Refunds: 5.00 of sa p1 at 23:00 on Jan 31 (Feb 1 in UTC); 10.00 of sc p0
# on Feb 5.
psql -X -q -v ON_ERROR_STOP=1 "$URL" >"$T/fixture.log" 2>&1 <<'SQL' || echo "not ok - fixture"
SET session_replication_role = replica;
SET TimeZone = 'America/Toronto';
INSERT INTO customers (customer_id, state) VALUES ('a', 'bound'), ('b', 'bound'), ('c', 'bound'), ('d', 'bound');
CREATE TEMP TABLE pl AS SELECT code, max(id) AS id FROM plans GROUP BY code;
INSERT INTO subscriptions (id, customer_id, plan_id, state, anchor) VALUES
 (1, 'a', (SELECT id FROM pl WHERE code = 'monthly'), 'active', '2024-12-01'),
 (2, 'b', (SELECT id FROM pl WHERE code = 'monthly'), 'canceled', '2025-01-10'),
 (3, 'c', (SELECT id FROM pl WHERE code = 'annual'), 'paused', '2025-01-05'),
 (4, 'd', (SELECT id FROM pl WHERE code = 'monthly'), 'ended', '2025-02-03');
INSERT INTO audit_log (at, actor, entity, entity_id, old_state, new_state) VALUES
 ('2024-12-01 09:00', 't', 'subscriptions', '1', NULL, 'active'),
 ('2025-01-10 09:00', 't', 'subscriptions', '2', NULL, 'active'),
 ('2025-02-20 09:00', 't', 'subscriptions', '2', 'active', 'canceled'),
 ('2025-01-05 09:00', 't', 'subscriptions', '3', NULL, 'trialing'),
 ('2025-01-19 09:00', 't', 'subscriptions', '3', 'trialing', 'active'),
 ('2025-02-10 09:00', 't', 'subscriptions', '3', 'active', 'paused'),
 ('2025-02-03 09:00', 't', 'subscriptions', '4', NULL, 'active'),
 ('2025-02-25 09:00', 't', 'subscriptions', '4', 'active', 'ended');
INSERT INTO charges (id, mch_order_no, kind, subscription_id, period, attempt, customer_id, plan_id,
                     amount_cents, state, pay_order_id, settled_at) VALUES
 (1, 'T1-1-1', 'subscription', 1, 1, 1, 'a', (SELECT id FROM pl WHERE code = 'monthly'), 2900, 'succeeded', 'IP1', '2025-01-01 10:00'),
 (2, 'T2-0-1', 'subscription', 2, 0, 1, 'b', (SELECT id FROM pl WHERE code = 'monthly'), 2900, 'failed', NULL, '2025-01-10 09:00'),
 (3, 'T2-0-2', 'subscription', 2, 0, 2, 'b', (SELECT id FROM pl WHERE code = 'monthly'), 2900, 'succeeded', 'IP3', '2025-01-11 09:00'),
 (4, 'T3-0-1', 'subscription', 3, 0, 1, 'c', (SELECT id FROM pl WHERE code = 'annual'), 29000, 'succeeded', 'IP4', '2025-01-19 09:00'),
 (5, 'TP5', 'one_off', NULL, NULL, NULL, 'a', NULL, 1234, 'succeeded', 'IP5', '2025-01-25 12:00'),
 (6, 'TP6', 'one_off', NULL, NULL, NULL, 'b', NULL, 500, 'succeeded', 'IP6', '2025-01-31 23:30'),
 (7, 'T1-2-1', 'subscription', 1, 2, 1, 'a', (SELECT id FROM pl WHERE code = 'monthly'), 2900, 'succeeded', 'IP7', '2025-02-01 10:00'),
 (8, 'T2-1-1', 'subscription', 2, 1, 1, 'b', (SELECT id FROM pl WHERE code = 'monthly'), 2900, 'failed', NULL, '2025-02-10 09:00'),
 (9, 'T2-1-2', 'subscription', 2, 1, 2, 'b', (SELECT id FROM pl WHERE code = 'monthly'), 2900, 'failed', NULL, '2025-02-11 09:00'),
 (10, 'T4-0-1', 'subscription', 4, 0, 1, 'd', (SELECT id FROM pl WHERE code = 'monthly'), 2900, 'succeeded', 'IP10', '2025-02-03 09:00'),
 (11, 'TP11', 'one_off', NULL, NULL, NULL, 'c', NULL, 700, 'pending', NULL, NULL);
INSERT INTO refunds (mch_refund_no, kind, charge_id, amount_cents, state, settled_at) VALUES
 ('TR1', 'void', 5, 1234, 'succeeded', '2025-01-26 12:00'),
 ('TR2', 'refund', 1, 500, 'succeeded', '2025-01-31 23:00'),
 ('TR3', 'refund', 4, 1000, 'succeeded', '2025-02-05 12:00'),
 ('TR4', 'refund', 4, 2000, 'failed', '2025-02-06 12:00');
SQL

bc --json report summary --from 2025-01-01 --to 2025-02-28
check "report summary --json: exit 0" [ $rc -eq 0 ]
# row MONTH PLAN: that row's figures in the order of the table, one line
# (jq prints the recovery rate 100.0 as 100).
row() {
	jq -r --arg m "$1" --arg p "$2" '.rows[] | select(.month == $m and (.plan // "ALL") == $p) |
	  [.gross_cents, .refunded_cents, .voided_cents, .net_cents, .charges, .declines, .recoveries,
	   (.recovery_rate // "-"), .new, .canceled, .ended, .paused, .active_at_end, .mrr_cents,
	   .mrr_change_cents] | map(tostring) | join(" ")' "$T/out"
}
# want MONTH PLAN FIGURES...: gross refunded voided net charges declines
# recoveries rate new canceled ended paused active mrr mrr_change.
want() {
	m=$1
	p=$2
	shift 2
	got=$(row "$m" "$p")
	if [ "$got" = "$*" ]; then
		ok "summary $m $p: $*"
	else
		not_ok "summary $m $p: want $*"
		echo "#   got  $got"
	fi
}
# January. monthly: sa p1 + sb p0 = 58.00; the 5.00 refund at 23:00 on
# Jan 31 is January's; sb's decline Jan 10 recovered Jan 11 (1 of 1 periods,
# 100%); new sb; active at the end sa, sb; MRR 58.00, 29.00 at the start.
want 2025-01 monthly 5800 500 0 5300 2 1 1 100 1 0 0 0 2 5800 2900
# annual: sc p0; new sc (trialing); active from Jan 19: MRR 290.00 / 12 = 24.17.
want 2025-01 annual 29000 0 0 29000 1 0 0 - 1 0 0 0 1 2417 2417
# payment links: 12.34 voided, 5.00 at 23:30 on Jan 31; the unpaid one not counted.
want 2025-01 "" 1734 0 1234 500 2 0 0 - 0 0 0 0 0 0 0
want 2025-01 ALL 36534 500 1234 34800 5 1 1 100 2 0 0 0 3 8217 5317
# February. monthly: sa p2 + sd p0; sb p1 declined twice (1 period, not
# recovered: 0%); new sd, canceled sb, ended sd; active at the end sa only.
want 2025-02 monthly 5800 0 0 5800 2 2 0 0 1 1 1 0 1 2900 -2900
# annual: the 10.00 refund (the failed one not); sc paused.
want 2025-02 annual 0 1000 0 -1000 0 0 0 - 0 0 0 1 0 0 -2417
want 2025-02 ALL 5800 1000 0 4800 2 2 0 0 1 1 1 1 1 2900 -5317
check "summary: no row for February's payment links (nothing happened)" [ -z "$(row 2025-02 "")" ]
bc report summary --month 2025-01
check "report summary --month: a table, January's plans then ALL" \
	sh -c "[ $rc -eq 0 ] && grep -q '^MONTH *PLAN *GROSS' '$T/out' &&
	       grep -q '^2025-01 *monthly *58.00 *5.00 *0.00 *53.00 *2 *1 *1 *100.0% ' '$T/out' &&
	       grep -q '^2025-01 *ALL *365.34 ' '$T/out' && ! grep -q '^2025-02' '$T/out'"
bc report summary --from 2025-02-01 --to 2025-02-14
# Feb 1 to 14: sb (canceled Feb 20) and sd (ended Feb 25) still active at the
# end, sc paused: MRR 87.00, up 29.00 - 24.17 = 4.83 from 82.17 at the start.
check "report summary of part of a month: the window's facts, MRR at its end" \
	sh -c "[ $rc -eq 0 ] && grep -q '^2025-02 *ALL *58.00 *10.00 *0.00 *48.00 *2 *2 *0 *0.0% *1 *0 *0 *1 *3 *87.00 *4.83\$' '$T/out'"
bc report summary --month 2025-1
check "report summary --month 2025-1: usage error, one line" \
	sh -c "[ $rc -eq 2 ] && [ \$(wc -l <'$T/err') -eq 1 ] && grep -q 'not a month' '$T/err'"

echo "1..$n"
[ $failed -eq 0 ]
