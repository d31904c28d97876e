/* summary.c: the monthly summary, one statement over the ledger. Every fact
 * (a charge, a decline, a dunned period, a refund, a subscription's change,
 * a subscription standing at a month's edge) becomes one row of figures in
 * its local month and plan; GROUPING SETS sums them per plan and per month.
 *
 * Money is dated like the report (settled_at on the billing clock, else
 * updated_at). Subscriptions keep no history of their own: their changes and
 * their state at a month's edge come from the audit log (dated by the
 * database's clock when the change was recorded), and the plan a
 * subscription stood on is that of its last paid charge (else its current
 * plan). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "summary.h"

/* Parameters: $1 from, $2 to (unix seconds), $3 the timezone. */
static const char SQL_SUMMARY[] =
    "WITH months AS ("
    "  SELECT to_char(m, 'YYYY-MM') AS month,"
    "         greatest(m AT TIME ZONE $3::text, to_timestamp($1::bigint)) AS ms,"
    "         least((m + interval '1 month') AT TIME ZONE $3::text, to_timestamp($2::bigint)) AS me"
    "    FROM generate_series(date_trunc('month', to_timestamp($1::bigint) AT TIME ZONE $3::text),"
    "                         to_timestamp($2::bigint - 1) AT TIME ZONE $3::text,"
    "                         interval '1 month') m),"
    /* A plan's price normalised to a month, in whole cents. */
    " plan_mrr AS ("
    "  SELECT id, code, round(amount_cents * CASE interval WHEN 'day' THEN 365 WHEN 'week' THEN 52"
    "                         WHEN 'month' THEN 12 ELSE 1 END::numeric"
    "                         / (12 * interval_count))::bigint AS mrr"
    "    FROM plans),"
    " ch AS ("
    "  SELECT c.*, coalesce(c.settled_at, c.updated_at) AS at, coalesce(p.code, '') AS plan"
    "    FROM charges c LEFT JOIN plans p ON p.id = c.plan_id),"
    " edges AS ("
    "  SELECT month, ms AS t, false AS is_end FROM months"
    "  UNION ALL SELECT month, me, true FROM months),"
    " standing AS ("
    "  SELECT e.month, e.is_end,"
    "         (SELECT a.new_state FROM audit_log a"
    "           WHERE a.entity = 'subscriptions' AND a.entity_id = s.id::text AND a.at < e.t"
    "           ORDER BY a.id DESC LIMIT 1) AS state,"
    "         coalesce((SELECT c.plan_id FROM ch c"
    "                    WHERE c.subscription_id = s.id AND c.state = 'succeeded' AND c.at < e.t"
    "                    ORDER BY c.at DESC LIMIT 1), s.plan_id) AS plan_id"
    "    FROM edges e CROSS JOIN subscriptions s),"
    /* Columns: month, plan, gross, charges, refunded, voided, declines,
     * recoveries, dunned, recovered, new, canceled, ended, paused, active,
     * mrr, mrr_start. */
    " facts AS ("
    "  SELECT mo.month, ch.plan, ch.amount_cents AS gross, 1 AS charges, 0::bigint AS refunded,"
    "         0::bigint AS voided, 0 AS declines,"
    "         (ch.kind = 'subscription' AND EXISTS (SELECT 1 FROM charges f"
    "            WHERE f.subscription_id = ch.subscription_id AND f.period = ch.period"
    "              AND f.state = 'failed'))::int AS recoveries,"
    "         0 AS dunned, 0 AS recovered, 0 AS new, 0 AS canceled, 0 AS ended, 0 AS paused,"
    "         0 AS active, 0::bigint AS mrr, 0::bigint AS mrr_start"
    "    FROM ch JOIN months mo ON ch.at >= mo.ms AND ch.at < mo.me"
    "   WHERE ch.state = 'succeeded'"
    "  UNION ALL"
    "  SELECT mo.month, ch.plan, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0"
    "    FROM ch JOIN months mo ON ch.at >= mo.ms AND ch.at < mo.me"
    "   WHERE ch.state = 'failed' AND ch.kind = 'subscription'"
    "  UNION ALL"
    "  SELECT mo.month, d.plan, 0, 0, 0, 0, 0, 0, 1, d.recovered, 0, 0, 0, 0, 0, 0, 0"
    "    FROM (SELECT min(plan) AS plan, min(at) FILTER (WHERE state = 'failed') AS at,"
    "                 bool_or(state = 'succeeded')::int AS recovered"
    "            FROM ch WHERE kind = 'subscription'"
    "           GROUP BY subscription_id, period HAVING bool_or(state = 'failed')) d"
    "    JOIN months mo ON d.at >= mo.ms AND d.at < mo.me"
    "  UNION ALL"
    "  SELECT mo.month, coalesce(p.code, ''), 0, 0,"
    "         CASE WHEN r.kind = 'refund' THEN r.amount_cents ELSE 0 END,"
    "         CASE WHEN r.kind = 'void' THEN r.amount_cents ELSE 0 END,"
    "         0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0"
    "    FROM refunds r JOIN charges c ON c.id = r.charge_id"
    "    LEFT JOIN plans p ON p.id = c.plan_id"
    "    JOIN months mo ON coalesce(r.settled_at, r.updated_at) >= mo.ms"
    "                  AND coalesce(r.settled_at, r.updated_at) < mo.me"
    "   WHERE r.state = 'succeeded'"
    "  UNION ALL"
    "  SELECT mo.month, p.code, 0, 0, 0, 0, 0, 0, 0, 0, (a.old_state IS NULL)::int,"
    "         (a.new_state = 'canceled')::int, (a.new_state = 'ended')::int,"
    "         (a.new_state = 'paused')::int, 0, 0, 0"
    "    FROM audit_log a JOIN subscriptions s ON s.id::text = a.entity_id"
    "    JOIN plans p ON p.id = s.plan_id"
    "    JOIN months mo ON a.at >= mo.ms AND a.at < mo.me"
    "   WHERE a.entity = 'subscriptions'"
    "     AND (a.old_state IS NULL OR a.new_state IN ('canceled', 'ended', 'paused'))"
    "     AND a.old_state IS DISTINCT FROM a.new_state" /* not a plan change's row */
    "  UNION ALL"
    "  SELECT st.month, pm.code, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, st.is_end::int,"
    "         CASE WHEN st.is_end THEN pm.mrr ELSE 0 END,"
    "         CASE WHEN st.is_end THEN 0 ELSE pm.mrr END"
    "    FROM standing st JOIN plan_mrr pm ON pm.id = st.plan_id"
    "   WHERE st.state IN ('active', 'past_due'))"
    " SELECT month, grouping(plan), coalesce(plan, ''), sum(gross), sum(refunded), sum(voided),"
    "        sum(gross) - sum(refunded) - sum(voided), sum(charges), sum(declines),"
    "        sum(recoveries), sum(dunned), sum(recovered),"
    "        coalesce(round(100.0 * sum(recovered) / nullif(sum(dunned), 0), 1)::text, ''),"
    "        sum(new), sum(canceled), sum(ended), sum(paused), sum(active), sum(mrr),"
    "        sum(mrr) - sum(mrr_start)"
    "   FROM facts GROUP BY GROUPING SETS ((month, plan), (month))"
    "  ORDER BY month, grouping(plan), plan";

/* SQL_SUMMARY's columns, in order. */
static const struct db_col COLS[] = {
    DB_COL_S(struct summary_row, month),          DB_COL_I(struct summary_row, all),
    DB_COL_S(struct summary_row, plan),           DB_COL_I(struct summary_row, gross_cents),
    DB_COL_I(struct summary_row, refunded_cents), DB_COL_I(struct summary_row, voided_cents),
    DB_COL_I(struct summary_row, net_cents),      DB_COL_I(struct summary_row, charges),
    DB_COL_I(struct summary_row, declines),       DB_COL_I(struct summary_row, recoveries),
    DB_COL_I(struct summary_row, dunned),         DB_COL_I(struct summary_row, recovered),
    DB_COL_S(struct summary_row, recovery_rate),  DB_COL_I(struct summary_row, new_subs),
    DB_COL_I(struct summary_row, canceled),       DB_COL_I(struct summary_row, ended),
    DB_COL_I(struct summary_row, paused),         DB_COL_I(struct summary_row, active),
    DB_COL_I(struct summary_row, mrr_cents),      DB_COL_I(struct summary_row, mrr_change_cents),
};

int summary_build(PGconn *c, int64_t from, int64_t to, const char *timezone, struct summary *out,
                  char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	out->rows =
	    db_rows_of(db_get(c, err, errlen, SQL_SUMMARY, DB_I(from), DB_I(to), DB_S(timezone)),
	               sizeof(*out->rows), &out->n, COLS, DB_NCOLS(COLS), err, errlen);
	return out->rows ? 0 : -1;
}

void summary_free(struct summary *s)
{
	free(s->rows);
	memset(s, 0, sizeof(*s));
}
