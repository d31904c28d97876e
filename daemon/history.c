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

enum {
	H_AT,
	H_ACTOR,
	H_REASON,
	H_ENTITY,
	H_REF,
	H_OF,
	H_OLD,
	H_NEW,
	H_DETAIL,
	H_AMOUNT,
	H_PAY,
	H_MSG,
	H_BUSINESS
};

#define COPY(dst, r, i, col) snprintf(dst, sizeof(dst), "%s", db_str(r, i, col))

static void fill(const PGresult *r, int i, void *row)
{
	struct history_step *h = row;

	h->at = db_i64(r, i, H_AT);
	h->business = db_i64(r, i, H_BUSINESS);
	COPY(h->actor, r, i, H_ACTOR);
	COPY(h->reason, r, i, H_REASON);
	COPY(h->entity, r, i, H_ENTITY);
	COPY(h->ref, r, i, H_REF);
	COPY(h->of, r, i, H_OF);
	COPY(h->old_state, r, i, H_OLD);
	COPY(h->new_state, r, i, H_NEW);
	COPY(h->detail, r, i, H_DETAIL);
	h->amount_cents = db_i64(r, i, H_AMOUNT);
	COPY(h->pay_order_id, r, i, H_PAY);
	COPY(h->ret_msg, r, i, H_MSG);
}

int history_customer(PGconn *c, const char *id, struct history_step **out, int *n, char *err,
                     size_t errlen)
{
	PGresult *r = db_one(
	    db_get(c, err, errlen, "SELECT 1 FROM customers WHERE customer_id = $1", DB_S(id)), err,
	    errlen, "unknown customer '%s'", id);

	if (!r)
		return -1;
	PQclear(r);
	*out = db_rows(db_get(c, err, errlen, SQL_HISTORY, DB_S(id)), sizeof(**out), n, fill, err,
	               errlen);
	return *out ? 0 : -1;
}
