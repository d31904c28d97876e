/* history.c: a customer's timeline. The audit log is written by the
 * tables' triggers in the order changes commit its rows (its id), so that
 * order is the timeline's; each row is dressed with what its entity says
 * now (order numbers, amounts, the gateway's answer). */
#include <stdio.h>
#include <string.h>

#include "db.h"
#include "history.h"

/* The audit rows of the customer and of everything that belongs to it,
 * each found through the (entity, entity_id) index. */
static const char SQL_HISTORY[] =
    "WITH keys(entity, entity_id) AS ("
    "  SELECT 'customers', $1::text"
    "  UNION ALL SELECT 'subscriptions', id::text FROM subscriptions WHERE customer_id = $1"
    "  UNION ALL SELECT 'charges', id::text FROM charges WHERE customer_id = $1"
    "  UNION ALL SELECT 'refunds', r.id::text FROM refunds r"
    "              JOIN charges c ON c.id = r.charge_id WHERE c.customer_id = $1"
    "  UNION ALL SELECT 'card_updates', id::text FROM card_updates WHERE customer_id = $1)"
    " SELECT extract(epoch FROM a.at)::bigint, a.actor, coalesce(a.reason, ''),"
    "        CASE a.entity WHEN 'customers' THEN 'customer' WHEN 'subscriptions'"
    "             THEN 'subscription' WHEN 'charges' THEN 'charge'"
    "             WHEN 'card_updates' THEN 'card_update' ELSE rf.kind END,"
    "        coalesce(ch.mch_order_no, rf.mch_refund_no, cu.binding_id, a.entity_id),"
    "        coalesce(ch.subscription_id::text, rc.mch_order_no, ''),"
    "        coalesce(a.old_state, ''), coalesce(a.new_state, ''),"
    "        coalesce(a.detail, CASE WHEN a.old_state IS NULL THEN plan_label(s.plan_id) END,"
    "                 ''),"
    "        coalesce(ch.amount_cents, rf.amount_cents, 0),"
    "        CASE WHEN a.new_state IN ('succeeded', 'failed', 'unknown')"
    "             THEN coalesce(ch.pay_order_id, rf.pay_order_id, '') ELSE '' END,"
    "        CASE WHEN a.new_state IN ('succeeded', 'failed', 'unknown')"
    "             THEN coalesce(ch.ret_msg, rf.ret_msg, '') ELSE '' END,"
    "        coalesce(extract(epoch FROM coalesce(a.billing_at, CASE WHEN a.old_state IS NULL"
    "                 THEN coalesce(ch.attempted_at, rf.requested_at)"
    "                 WHEN a.new_state IN ('succeeded', 'failed')"
    "                 THEN coalesce(ch.settled_at, rf.settled_at) END))::bigint, 0)"
    "   FROM keys k JOIN audit_log a ON a.entity = k.entity AND a.entity_id = k.entity_id"
    "   LEFT JOIN charges ch"
    "          ON ch.id = CASE WHEN a.entity = 'charges' THEN a.entity_id::bigint END"
    "   LEFT JOIN refunds rf"
    "          ON rf.id = CASE WHEN a.entity = 'refunds' THEN a.entity_id::bigint END"
    "   LEFT JOIN charges rc ON rc.id = rf.charge_id"
    "   LEFT JOIN card_updates cu"
    "          ON cu.id = CASE WHEN a.entity = 'card_updates' THEN a.entity_id::bigint END"
    "   LEFT JOIN subscriptions s"
    "          ON s.id = CASE WHEN a.entity = 'subscriptions' THEN a.entity_id::bigint END"
    "  ORDER BY a.id";

/* SQL_HISTORY's columns, in order. */
static const struct db_col STEP_COLS[] = {
    DB_COL_I(struct history_step, at),           DB_COL_S(struct history_step, actor),
    DB_COL_S(struct history_step, reason),       DB_COL_S(struct history_step, entity),
    DB_COL_S(struct history_step, ref),          DB_COL_S(struct history_step, of),
    DB_COL_S(struct history_step, old_state),    DB_COL_S(struct history_step, new_state),
    DB_COL_S(struct history_step, detail),       DB_COL_I(struct history_step, amount_cents),
    DB_COL_S(struct history_step, pay_order_id), DB_COL_S(struct history_step, ret_msg),
    DB_COL_I(struct history_step, business),
};

int history_customer(PGconn *c, const char *id, struct history_step **out, int *n, char *err,
                     size_t errlen)
{
	PGresult *r = db_one(
	    db_get(c, err, errlen, "SELECT 1 FROM customers WHERE customer_id = $1", DB_S(id)), err,
	    errlen, "unknown customer '%s'", id);

	if (!r)
		return -1;
	PQclear(r);
	*out = db_rows_of(db_get(c, err, errlen, SQL_HISTORY, DB_S(id)), sizeof(**out), n,
	                  STEP_COLS, DB_NCOLS(STEP_COLS), err, errlen);
	return *out ? 0 : -1;
}
