#!/bin/sh
# test_roles.sh: least privilege in the database. The tables belong to the
# role that migrates (billing_owner); billctl and billingd run as
# billing_daemon, a member of billing_app (tests/pg.sh makes the roles as the
# README does). The normal verbs work as that role, while deleting or
# rewriting audit rows, deleting charges or refunds, and switching the
# ledger's triggers off are refused, and the ledger's guards bind it.
# TAP lines on stdout; needs the PG* variables of tests/run.sh.
set -u
B=${B:-build}
T=$(mktemp -d)
DBNAME=t_roles
. tests/cli_lib.sh
trap cleanup EXIT INT TERM

setup_world || exit 1
check "the tables belong to the owner role" \
	[ "$(sql "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'")" = billing_owner ]

# ---- the normal verbs, as the application role ----
check "customer enrol, the hosted page and customer check bind c1" enrol c1 4501161234567214
bc --json subscribe c1 monthly --trial-days 0
S1=$(grep -o '"id":[0-9]*' "$T/out" | head -n 1 | cut -d: -f2)
check "subscribe" [ $rc -eq 0 ]
bc charge "$S1"
check "charge" [ $rc -eq 0 ]
PAY=$(sql "SELECT pay_order_id FROM charges WHERE subscription_id = $S1")
bc refund "$PAY" --amount 100
check "refund" [ $rc -eq 0 ]
bc --json pay-link c1 1234
check "pay-link" [ $rc -eq 0 ]
bc subscription pause "$S1"
check "subscription pause" [ $rc -eq 0 ]
bc report --month "$(date +%Y-%m)"
check "report" [ $rc -eq 0 ]
bc migrate
check "billctl migrate as the application role with nothing to apply: only checks" \
	sh -c "[ $rc -eq 0 ] && grep -q '0 applied' '$T/out'"

# ---- what the application role may not do ----
AUDIT=$(sql "SELECT count(*) FROM audit_log")
check "the verbs wrote the audit log" [ "$AUDIT" -gt 5 ]
# refused STATEMENT: psql as the application role fails with the statement.
refused() {
	! psql -X -q -At -v ON_ERROR_STOP=1 "$APP_URL" -c "$1" >"$T/out" 2>"$T/err"
}
check "DELETE FROM audit_log: refused" refused "DELETE FROM audit_log"
check "UPDATE audit_log: refused" refused "UPDATE audit_log SET actor = 'someone else'"
check "TRUNCATE audit_log: refused" refused "TRUNCATE audit_log"
check "switching the audit log's trigger off: refused" \
	refused "ALTER TABLE audit_log DISABLE TRIGGER audit_append_only"
check "CREATE TABLE: refused (the schema is the owner's)" refused "CREATE TABLE x (i int)"
check "DELETE FROM charges: refused" refused "DELETE FROM charges"
check "DELETE FROM refunds: refused" refused "DELETE FROM refunds"
check "dropping the ledger's guard: refused" refused "DROP TRIGGER charges_final ON charges"
check "the ledger's guard binds it: a succeeded charge's money is final" \
	refused "UPDATE charges SET amount_cents = 1 WHERE state = 'succeeded'"
check "nothing was deleted or rewritten" \
	[ "$(sql "SELECT count(*) FROM audit_log WHERE actor <> 'someone else'")" = "$AUDIT" ]
check "the charge and the refund are still there" \
	[ "$(sql "SELECT count(*) FROM charges c JOIN refunds r ON r.charge_id = c.id")" = 1 ]

echo "1..$n"
[ $failed -eq 0 ]
