/* support_billing.c: customers enrolled on the fake gateway and subscribed,
 * for the scheduler and daemon tests, the benchmark and the demo. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "calendar.h"
#include "db.h"
#include "gateway.h"
#include "plans.h"
#include "support.h"

static void die(const char *what, const char *err)
{
	fprintf(stderr, "test support: %s: %s\n", what, err);
	abort();
}

void ts_enrol(PGconn *db, struct gw_client *gw, const char *id, const char *card)
{
	struct gw_request req = {.call = GW_ADDUSER,
	                         .customer_id = id,
	                         .return_url = "http://127.0.0.1:9/iotpay/return"};
	struct gw_result res;
	char query[128], err[512];
	const char *p[1] = {id};
	char *loc;

	if (gw_call(gw, &req, &res) != GW_SUCCESS)
		die("cc_adduser", res.detail[0] ? res.detail : res.ret_msg);
	snprintf(query, sizeof(query), "card=%s&expiry=0729", card ? card : "4501161234567214");
	loc = ts_fakegw_hosted(res.pay_url, query);
	if (!loc || !strstr(loc, "retCode=SUCCESS"))
		die("hosted adduser page", loc ? loc : "no redirect");
	free(loc);
	if (db_exec(
	        db,
	        "INSERT INTO customers (customer_id, state, card_masked, card_type, card_expiry)"
	        " VALUES ($1, 'bound', '450116XXXXXX7214', 'V', '0729')"
	        " ON CONFLICT (customer_id) DO UPDATE SET state = 'bound'",
	        1, p, err, sizeof(err)) < 0)
		die("insert customer", err);
}

void ts_sync_plans(PGconn *db)
{
	struct plan *plans = NULL;
	int n = 0, created;
	char err[512];

	if (plans_load_dir("plans", &plans, &n, err, sizeof(err)) < 0 ||
	    plans_sync(db, plans, n, &created, err, sizeof(err)) < 0)
		die("plans", err);
	free(plans);
}

long ts_subscribe(PGconn *db, const char *customer, const char *plan_code, long start)
{
	struct plan p;
	char err[512], anchor[24], trial_end[24], plan_id[24], startbuf[24];
	const char *params[5] = {customer, plan_id, anchor, NULL, startbuf};
	PGresult *r;
	long id;

	if (plans_get_current(db, plan_code, &p, err, sizeof(err)) < 0)
		die("plan", err);
	snprintf(plan_id, sizeof(plan_id), "%lld", (long long)p.id);
	snprintf(startbuf, sizeof(startbuf), "%ld", start);
	if (p.trial_days > 0) {
		struct cal_duration d = {p.trial_days, 'd'};
		snprintf(trial_end, sizeof(trial_end), "%lld", (long long)cal_add(start, d));
		params[3] = trial_end;
	}
	snprintf(anchor, sizeof(anchor), "%s", params[3] ? trial_end : startbuf);
	r = db_query(
	    db,
	    "INSERT INTO subscriptions (customer_id, plan_id, state, anchor, trial_end,"
	    " next_charge_at, created_at)"
	    " VALUES ($1, $2, CASE WHEN $4::bigint IS NULL THEN 'active' ELSE 'trialing' END,"
	    " to_timestamp($3), to_timestamp($4), to_timestamp($3), to_timestamp($5))"
	    " RETURNING id",
	    5, params, err, sizeof(err));
	if (!r)
		die("subscribe", err);
	id = (long)db_i64(r, 0, 0);
	PQclear(r);
	return id;
}
