/* test_scheduler: the charge protocol in-process against the real PostgreSQL
 * and the fake gateway: simulated years (clean, and with 5% of every fault
 * and the gateway charging again on duplicate order numbers), dunning,
 * binding declines, unknown outcomes resolved before any new attempt. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "calendar.h"
#include "db.h"
#include "failover.h"
#include "gateway.h"
#include "metrics.h"
#include "plans.h"
#include "scheduler.h"
#include "support.h"
#include "wave.h"

#define DAY  86400L
#define HOUR 3600L

struct env {
	struct ts_fakegw fake;
	struct cfg cfg;
	PGconn *db;
	struct gw_client *gw;
	struct sched *s;
};

/* One environment at a time, in static storage so that the teardown can
 * stop it after a failed assertion has left the test function. */
static struct env the_env, *live;

static void env_start(struct env *e, const char *name, const char *fake_args, long timeout_ms)
{
	char err[512];
	const char *url;

	ts_fakegw_start(&e->fake, fake_args);
	url = ts_db_new(name);
	ts_cfg(&e->cfg, url, &e->fake);
	e->cfg.gateway.timeout_ms = timeout_ms;
	assert_int_equal(cfg_apply_timezone(&e->cfg, err, sizeof(err)), 0);
	e->db = ts_db_connect(url);
	e->gw = gw_client_new(&e->cfg.gateway, err, sizeof(err));
	assert_non_null(e->gw);
	e->s = sched_new(&e->cfg, e->db, e->gw, "test-scheduler");
	assert_non_null(e->s);
	live = e;
	ts_sync_plans(e->db);
}

/* env_start with one customer subscribed weekly from start: the
 * subscription's id. */
static long one_weekly(struct env *e, const char *name, const char *customer, long start)
{
	env_start(e, name, NULL, 2000);
	ts_enrol(e->db, e->gw, customer, NULL);
	return ts_subscribe(e->db, customer, "weekly", start);
}

static void env_stop(struct env *e)
{
	live = NULL;
	sched_free(e->s);
	gw_client_free(e->gw);
	PQfinish(e->db);
	ts_fakegw_stop(&e->fake);
}

static void pass(struct env *e, long now)
{
	char err[512];
	struct sched_stats st = {0};

	if (sched_pass(e->s, now, &st, err, sizeof(err)) < 0)
		fail_msg("sched_pass: %s", err);
}

static long at(const char *iso)
{
	int64_t t;
	char err[256];

	if (cal_parse_time(iso, &t, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	return (long)t;
}

/* How many periods of subscription row i (anchor, plan) start at or before
 * t: what must have been charged. */
static int periods_due(const struct plan *p, long anchor, long t)
{
	int n = 0;

	while (cal_period_start(anchor, p->interval, p->interval_count, n) <= t &&
	       (p->cycles == 0 || n < p->cycles))
		n++;
	return n;
}

/* Every due period charged exactly once, nothing open, and our ledger equal
 * to the gateway's order by order. */
static void verify(struct env *e, long last_pass)
{
	char err[512];
	PGresult *r;
	cJSON *ledger, *orders, *o;
	long ours = 0, theirs = 0;

	assert_int_equal(ts_db_long(e->db, "SELECT count(*) FROM charges WHERE state IN "
	                                   "('pending', 'unknown')"),
	                 0);
	/* per subscription: succeeded periods are 0..k-1, k as the calendar says */
	r = db_query(e->db,
	             "SELECT s.id, s.plan_id, extract(epoch FROM s.anchor)::bigint,"
	             "       count(c.id), coalesce(max(c.period), -1), count(DISTINCT c.period)"
	             "  FROM subscriptions s LEFT JOIN charges c"
	             "    ON c.subscription_id = s.id AND c.state = 'succeeded'"
	             " GROUP BY s.id ORDER BY s.id",
	             0, NULL, err, sizeof(err));
	assert_non_null(r);
	for (int i = 0; i < PQntuples(r); i++) {
		struct plan p;
		int want;

		assert_int_equal(plans_get(e->db, db_i64(r, i, 1), &p, err, sizeof(err)), 0);
		want = periods_due(&p, (long)db_i64(r, i, 2), last_pass);
		if (db_i64(r, i, 3) != want || db_i64(r, i, 5) != want ||
		    db_i64(r, i, 4) != want - 1)
			fail_msg("subscription %s (%s): %lld charges for %lld periods, %d due",
			         db_str(r, i, 0), p.code, (long long)db_i64(r, i, 3),
			         (long long)db_i64(r, i, 5), want);
	}
	PQclear(r);

	/* order by order against the gateway */
	ledger = ts_fakegw_ledger(&e->fake);
	orders = cJSON_GetObjectItem(ledger, "orders");
	cJSON_ArrayForEach(o, orders)
	{
		const char *mch = cJSON_GetStringValue(cJSON_GetObjectItem(o, "mchOrderNo"));
		const char *pay = cJSON_GetStringValue(cJSON_GetObjectItem(o, "payOrderId"));
		char amount[32];
		const char *p[3] = {mch, pay, amount};

		if (strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(o, "payType")), "pay") != 0)
			continue;
		theirs++;
		snprintf(amount, sizeof(amount), "%.0f",
		         cJSON_GetNumberValue(cJSON_GetObjectItem(o, "amount")));
		r = db_query(e->db,
		             "SELECT 1 FROM charges WHERE mch_order_no = $1 AND pay_order_id = $2"
		             " AND amount_cents = $3::bigint AND state = 'succeeded'",
		             3, p, err, sizeof(err));
		assert_non_null(r);
		if (PQntuples(r) != 1)
			fail_msg(
			    "gateway order %s (%s, %s cents) is not a succeeded charge of ours",
			    pay, mch, amount);
		PQclear(r);
	}
	cJSON_Delete(ledger);
	ours = ts_db_long(e->db, "SELECT count(*) FROM charges WHERE state = 'succeeded'");
	assert_int_equal(ours, theirs);
}

static const char *const plan_codes[] = {"monthly", "annual", "weekly", "instalments"};

/* n customers spread over the plans, starting at various days and hours of
 * January 2026 (month-end anchors included). */
static void populate(struct env *e, int n)
{
	long jan1 = at("2026-01-01");

	for (int i = 0; i < n; i++) {
		char id[32];
		snprintf(id, sizeof(id), "cust%04d", i);
		ts_enrol(e->db, e->gw, id, NULL);
		ts_subscribe(e->db, id, plan_codes[i % 4],
		             jan1 + (i % 31) * DAY + (i % 7) * 3 * HOUR);
	}
}

/* Passes every `step` seconds through 2026; returns the last pass's time. */
static long simulate_year(struct env *e, long step)
{
	long t = at("2026-01-01"), end = at("2027-01-01");

	for (; t <= end; t += step)
		pass(e, t);
	return end;
}

static void test_year_clean(void **state)
{
	struct env *e = &the_env;
	long last;

	(void)state;
	env_start(e, "sched_year", NULL, 2000);
	populate(e, 1000);
	last = simulate_year(e, 6 * HOUR);
	verify(e, last);
	assert_true(ts_db_long(e->db, "SELECT count(*) FROM charges") > 15000);
	/* 12 instalments started in January: the last one is in December */
	assert_int_equal(
	    ts_db_long(e->db, "SELECT count(*) FROM subscriptions WHERE state = 'ended'"), 250);
	env_stop(e);
}

static void test_year_with_faults(void **state)
{
	static const char *const kinds[] = {"drop_before", "drop_after", "hang_after", "http5xx",
	                                    "http429",     "garbage",    "busy",       "latency"};
	struct env *e = &the_env;
	long last;
	char json[256];

	(void)state;
	env_start(e, "sched_faults", NULL, 300);
	populate(e, 1000);
	assert_int_equal(ts_fakegw_post(&e->fake, "faults",
	                                "{\"endpoint\":\"*\",\"kind\":\"dup_charge\",\"rate\":1}",
	                                NULL),
	                 200);
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		snprintf(json, sizeof(json),
		         "{\"endpoint\":\"*\",\"kind\":\"%s\",\"rate\":0.05,\"ms\":%d}", kinds[i],
		         strcmp(kinds[i], "hang_after") == 0 ? 600 : 20);
		assert_int_equal(ts_fakegw_post(&e->fake, "faults", json, NULL), 200);
	}
	last = simulate_year(e, DAY);
	/* Then a healthy gateway an hour later: every unknown gets resolved, and
	 * what "system busy" deferred gets charged. */
	last += HOUR;
	assert_int_equal(ts_fakegw_post(&e->fake, "faults", "{\"clear\":true}", NULL), 200);
	for (int i = 0; i < 10; i++) {
		pass(e, last);
		if (ts_db_long(e->db, "SELECT count(*) FROM charges WHERE state IN "
		                      "('pending', 'unknown')") == 0)
			break;
	}
	verify(e, last);
	/* the faults did happen, and were resolved by cc_query */
	assert_true(ts_db_long(e->db, "SELECT count(*) FROM audit_log WHERE entity = 'charges'"
	                              " AND new_state = 'unknown'") > 100);
	assert_true(ts_db_long(e->db, "SELECT count(*) FROM charges WHERE attempt > 1") > 10);
	env_stop(e);
}

/* Declines step through the plan's retry schedule, counted from each failed
 * attempt; success returns the subscription to active. */
static void test_dunning(void **state)
{
	struct env *e = &the_env;
	long start = at("2026-03-02T09:00:00-05:00"), sub;
	char q[128];

	(void)state;
	sub = one_weekly(e, "sched_dunning", "dun1", start); /* retry [12h, 1d], then pause */
	assert_int_equal(
	    ts_fakegw_post(&e->fake, "decline", "{\"customerId\":\"dun1\",\"count\":2}", NULL),
	    200);
	pass(e, start);
	snprintf(
	    q, sizeof(q),
	    "SELECT extract(epoch FROM next_charge_at)::bigint FROM subscriptions WHERE id = %ld",
	    sub);
	assert_int_equal(ts_db_long(e->db, q), start + 12 * HOUR);
	pass(e, start + 12 * HOUR);
	/* second decline: 1 day after that attempt */
	assert_int_equal(ts_db_long(e->db, q), start + 12 * HOUR + DAY);
	pass(e, start + 12 * HOUR + DAY);
	assert_int_equal(ts_db_long(e->db,
	                            "SELECT count(*) FROM subscriptions WHERE state = 'active'"
	                            " AND period = 1 AND attempts = 0"),
	                 1);
	/* the next period is a week after the anchor, not after the late payment,
	 * at the same local time across the DST change of March 8 */
	assert_int_equal(ts_db_long(e->db, q), at("2026-03-09T09:00:00-04:00"));
	assert_int_equal(ts_db_long(e->db, "SELECT count(*) FROM charges WHERE state = 'failed'"),
	                 2);

	/* Exhausted: three declines on the weekly plan pause the subscription. */
	assert_int_equal(
	    ts_fakegw_post(&e->fake, "decline", "{\"customerId\":\"dun1\",\"count\":3}", NULL),
	    200);
	pass(e, start + 7 * DAY);
	pass(e, start + 7 * DAY + 12 * HOUR);
	pass(e, start + 8 * DAY + 12 * HOUR);
	assert_int_equal(ts_db_long(e->db,
	                            "SELECT count(*) FROM subscriptions WHERE state = 'paused'"
	                            " AND next_charge_at IS NULL"),
	                 1);
	pass(e, start + 30 * DAY);
	assert_int_equal(ts_db_long(e->db, "SELECT count(*) FROM charges"), 6);
	env_stop(e);
}

/* A charge refused for a binding reason re-checks the binding and marks the
 * customer unbound: no more attempts until re-enrolled. */
static void test_binding_decline(void **state)
{
	struct env *e = &the_env;
	long start = at("2026-03-02T09:00:00-05:00");

	(void)state;
	one_weekly(e, "sched_binding", "gone1", start);
	assert_int_equal(ts_fakegw_post(&e->fake, "unbind", "{\"customerId\":\"gone1\"}", NULL),
	                 200);
	pass(e, start);
	assert_int_equal(
	    ts_db_long(e->db, "SELECT count(*) FROM customers WHERE state = 'unbound'"), 1);
	pass(e, start + 12 * HOUR);
	pass(e, start + 3 * DAY);
	assert_int_equal(ts_db_long(e->db, "SELECT count(*) FROM charges"), 1);
	env_stop(e);
}

static long fake_requests(struct env *e, const char *endpoint)
{
	cJSON *l = ts_fakegw_ledger(&e->fake);
	long n = (long)cJSON_GetNumberValue(
	    cJSON_GetObjectItem(cJSON_GetObjectItem(l, "requests"), endpoint));
	cJSON_Delete(l);
	return n;
}

/* An unknown outcome is resolved with cc_query before anything new is sent:
 * processed-then-dropped is found paid; dropped-before is proven absent and
 * retried with a new order number. */
static void test_unknown_resolved_first(void **state)
{
	struct env *e = &the_env;
	long start = at("2026-03-02T09:00:00-05:00");

	(void)state;
	one_weekly(e, "sched_unknown", "u1", start);
	ts_fakegw_post(
	    &e->fake, "faults",
	    "{\"endpoint\":\"cc_purchasewithtoken\",\"kind\":\"drop_after\",\"count\":1}", NULL);
	pass(e, start);
	assert_int_equal(ts_db_long(e->db, "SELECT count(*) FROM charges WHERE state = 'unknown'"),
	                 1);
	pass(e, start + HOUR);
	assert_int_equal(fake_requests(e, "cc_purchasewithtoken"), 1);
	assert_int_equal(
	    ts_db_long(e->db,
	               "SELECT count(*) FROM charges WHERE state = 'succeeded' AND attempt = 1"),
	    1);
	assert_int_equal(ts_db_long(e->db, "SELECT period FROM subscriptions"), 1);

	ts_fakegw_post(
	    &e->fake, "faults",
	    "{\"endpoint\":\"cc_purchasewithtoken\",\"kind\":\"drop_before\",\"count\":1}", NULL);
	pass(e, start + 7 * DAY);
	assert_int_equal(ts_db_long(e->db, "SELECT count(*) FROM charges WHERE state = 'unknown'"),
	                 1);
	pass(e, start + 7 * DAY + HOUR);
	assert_int_equal(ts_db_long(e->db, "SELECT count(*) FROM charges WHERE period = 1 AND"
	                                   " state = 'failed' AND attempt = 1"),
	                 1);
	assert_int_equal(ts_db_long(e->db, "SELECT count(*) FROM charges WHERE period = 1 AND"
	                                   " state = 'succeeded' AND attempt = 2 AND mch_order_no"
	                                   " LIKE '%-1-2'"),
	                 1);
	verify(e, start + 7 * DAY + HOUR);
	env_stop(e);
}

/* After a database restore our next order number was already sent: the
 * gateway refuses it as a duplicate. That proves an order exists, so the
 * charge is unknown (no dunning step), and cc_query finds it paid: the
 * period is paid once, and nothing is charged again. */
static void test_duplicate_refusal_is_unknown(void **state)
{
	struct env *e = &the_env;
	long start = at("2026-03-02T09:00:00-05:00"), sub, period;
	char q[160], order_no[64];
	struct gw_request req = {.call = GW_PURCHASE_TOKEN, .customer_id = "d1", .amount = 6450};
	struct gw_result res;

	(void)state;
	sub = one_weekly(e, "sched_duplicate", "d1", start);
	snprintf(q, sizeof(q), "SELECT period FROM subscriptions WHERE id = %ld", sub);
	period = ts_db_long(e->db, q);
	snprintf(order_no, sizeof(order_no), "T%ld-%ld-1", sub, period);
	/* the order the lost commit had sent */
	req.mch_order_no = order_no;
	assert_int_equal(gw_call(e->gw, &req, &res), GW_SUCCESS);

	pass(e, start);
	assert_int_equal(ts_db_long(e->db, "SELECT count(*) FROM charges WHERE state = 'unknown'"),
	                 1);
	assert_int_equal(ts_db_long(e->db, "SELECT attempts FROM subscriptions"), 0);
	pass(e, start + HOUR);
	assert_int_equal(
	    ts_db_long(e->db,
	               "SELECT count(*) FROM charges WHERE state = 'succeeded' AND attempt = 1"),
	    1);
	assert_int_equal(ts_db_long(e->db, "SELECT count(*) FROM charges"), 1);
	assert_int_equal(ts_db_long(e->db, q), period + 1);
	assert_int_equal(fake_requests(e, "cc_purchasewithtoken"), 2);
	verify(e, start + HOUR);
	env_stop(e);
}

/* One outcome the database refuses (here a trigger standing for any bad
 * row) does not take its batch down: the others are recorded, and the bad
 * one stays open for cc_query, never sent again. The trigger slows every
 * other write so that the outcomes queue up into one batch. */
static void test_bad_row_recorded_alone(void **state)
{
	struct env *e = &the_env;
	long start = at("2026-03-02T09:00:00-05:00");
	char id[16], err[512];

	(void)state;
	env_start(e, "sched_bad_row", NULL, 2000);
	for (int i = 0; i < 6; i++) {
		snprintf(id, sizeof(id), "b%d", i);
		ts_enrol(e->db, e->gw, id, NULL);
		ts_subscribe(e->db, id, "weekly", start + i);
	}
	ts_db_long(e->db, "CREATE FUNCTION t_bad_row() RETURNS trigger LANGUAGE plpgsql AS $$"
	                  " BEGIN IF NEW.customer_id = 'b5' THEN"
	                  "   RAISE EXCEPTION 'bad row'; END IF;"
	                  " PERFORM pg_sleep(0.1); RETURN NEW; END $$");
	ts_db_long(e->db, "CREATE TRIGGER t_bad_row BEFORE UPDATE OF state ON charges FOR EACH ROW"
	                  " WHEN (NEW.state <> 'pending') EXECUTE FUNCTION t_bad_row()");
	/* the pass reports the row it could not record */
	assert_int_equal(sched_pass(e->s, start + 10, NULL, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "bad row"));
	assert_int_equal(
	    ts_db_long(e->db, "SELECT count(*) FROM charges WHERE state = 'succeeded'"), 5);
	assert_int_equal(ts_db_long(e->db, "SELECT count(*) FROM charges WHERE state = 'pending'"
	                                   " AND customer_id = 'b5'"),
	                 1);
	/* once the database takes it, cc_query settles it: charged once */
	ts_db_long(e->db, "DROP TRIGGER t_bad_row ON charges");
	ts_db_long(e->db, "UPDATE charges SET lease_expires_at = now() WHERE state = 'pending'");
	pass(e, start + HOUR);
	assert_int_equal(fake_requests(e, "cc_purchasewithtoken"), 6);
	verify(e, start + HOUR);
	env_stop(e);
}

/* The outcomes the recorder has not written, as /metrics says them. */
static long unrecorded_now(void)
{
	char err[256], *m = NULL, *at;
	long n;

	if (metrics_render(NULL, 0, 0, &m, err, sizeof(err)) < 0)
		fail_msg("metrics_render: %s", err);
	at = strstr(m, "\nbilling_outcomes_unrecorded ");
	assert_non_null(at);
	n = strtol(at + strlen("\nbilling_outcomes_unrecorded "), NULL, 10);
	free(m);
	return n;
}

struct gauge_watch {
	atomic_int stop;
	long peak;
};

static void *watch_unrecorded(void *arg)
{
	struct gauge_watch *w = arg;

	while (!atomic_load(&w->stop)) {
		long n = unrecorded_now();

		if (n > w->peak)
			w->peak = n;
		usleep(1000);
	}
	return NULL;
}

/* A recorder slower than the gateway holds the claims back: what is
 * claimed and not yet recorded stays within the slots, what may wait for
 * one, and two batches, instead of growing with the due work (each
 * waiting outcome holds memory). A row trigger slows the recorder only;
 * a statement trigger on the claims keeps the peak. */
static void test_recorder_holds_claims_back(void **state)
{
	struct env *e = &the_env;
	long start = at("2026-03-02T09:00:00-05:00");
	int n = 800;
	long bound;
	struct gauge_watch w = {0};
	pthread_t watcher;

	(void)state;
	env_start(e, "sched_backlog", NULL, 2000);
	e->cfg.batch_size = 16;
	for (int i = 0; i < n; i++) {
		char id[16];

		snprintf(id, sizeof(id), "r%d", i);
		ts_enrol(e->db, e->gw, id, NULL);
		ts_subscribe(e->db, id, "weekly", start + i % 60);
	}
	ts_db_long(e->db, "CREATE TABLE t_peak (pending bigint)");
	ts_db_long(e->db, "CREATE FUNCTION t_slow() RETURNS trigger LANGUAGE plpgsql AS $$"
	                  " BEGIN PERFORM pg_sleep(0.002); RETURN NEW; END $$");
	ts_db_long(e->db, "CREATE TRIGGER t_slow BEFORE UPDATE OF state ON charges FOR EACH ROW"
	                  " WHEN (NEW.state <> 'pending') EXECUTE FUNCTION t_slow()");
	ts_db_long(e->db, "CREATE FUNCTION t_peak() RETURNS trigger LANGUAGE plpgsql AS $$"
	                  " BEGIN INSERT INTO t_peak SELECT count(*) FROM charges"
	                  "   WHERE state = 'pending'; RETURN NULL; END $$");
	ts_db_long(e->db, "CREATE TRIGGER t_peak AFTER INSERT ON charges FOR EACH STATEMENT"
	                  " EXECUTE FUNCTION t_peak()");
	assert_int_equal(pthread_create(&watcher, NULL, watch_unrecorded, &w), 0);
	pass(e, start + HOUR);
	atomic_store(&w.stop, 1);
	pthread_join(watcher, NULL);
	/* in flight and queued for a slot (pump.c's claimable), and two batches */
	bound = 3L * e->cfg.gateway.max_in_flight + 2L * e->cfg.batch_size;
	assert_in_range(ts_db_long(e->db, "SELECT max(pending) FROM t_peak"), 1, bound);
	/* the gauge saw the slow recorder's backlog, and the pass's end clear it */
	assert_in_range(w.peak, e->cfg.batch_size, bound);
	assert_int_equal(unrecorded_now(), 0);
	assert_int_equal(
	    ts_db_long(e->db, "SELECT count(*) FROM charges WHERE state = 'succeeded'"), n);
	env_stop(e);
}

/* An attempt whose order number is already taken (by any row: a restore,
 * a hand-made row) is not claimed, and says so at error level instead of
 * skipping the subscription silently at every pass. */
static void test_claim_conflict_logged(void **state)
{
	struct env *e = &the_env;
	long start = at("2026-03-02T09:00:00-05:00"), sub;
	char q[256], log_path[] = "/tmp/test_claim_conflict.XXXXXX", *log;
	int fd, saved;

	(void)state;
	sub = one_weekly(e, "sched_conflict", "k1", start);
	snprintf(q, sizeof(q),
	         "INSERT INTO charges (mch_order_no, kind, customer_id, amount_cents)"
	         " SELECT 'T' || id || '-' || period || '-1', 'one_off', customer_id, 100"
	         "   FROM subscriptions WHERE id = %ld",
	         sub);
	ts_db_long(e->db, q);
	fd = mkstemp(log_path);
	assert_true(fd >= 0);
	fflush(stderr);
	saved = dup(2);
	dup2(fd, 2);
	pass(e, start);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	close(fd);
	log = ts_read_file(log_path);
	unlink(log_path);
	fputs(log, stderr);
	assert_non_null(strstr(log, "level=error event=claim_conflict"));
	snprintf(q, sizeof(q), "mch_order_no=T%ld-", sub);
	assert_non_null(strstr(log, q));
	free(log);
	assert_int_equal(fake_requests(e, "cc_purchasewithtoken"), 0);
	env_stop(e);
}

/* billctl charge: once the attempt is claimed the request may be on the
 * wire, so an error after that (here the recorder cannot reach the
 * database) is an unknown outcome, never "nothing was sent". */
static void test_charge_now_error_after_claim_is_unknown(void **state)
{
	struct env *e = &the_env;
	long start = at("2026-03-02T09:00:00-05:00");
	struct cfg unreachable;
	struct sched *s;
	char mch[64], err[512];
	long sub;

	(void)state;
	sub = one_weekly(e, "sched_charge_now", "n1", start);
	unreachable = e->cfg;
	snprintf(unreachable.database_url, sizeof(unreachable.database_url),
	         "postgresql://127.0.0.1:1/none");
	s = sched_new(&unreachable, e->db, e->gw, "test-scheduler");
	assert_non_null(s);
	assert_int_equal(sched_charge_now(s, sub, start, 0, mch, sizeof(mch), err, sizeof(err)),
	                 GW_UNKNOWN);
	sched_free(s);
	assert_int_equal(fake_requests(e, "cc_purchasewithtoken"), 1);
	assert_int_equal(ts_db_long(e->db, "SELECT count(*) FROM charges WHERE state = 'pending'"),
	                 1);
	env_stop(e);
}

/* All 30 subscriptions of the wave test active at period, never declined;
 * the wave shown: shown ("" for none). */
static void check_wave(struct env *e, int period, const char *shown)
{
	char sql[160], msg[256];

	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM subscriptions"
	         " WHERE state = 'active' AND attempts = 0 AND period = %d",
	         period);
	assert_int_equal(ts_db_long(e->db, sql), 30);
	wave_current(msg, sizeof(msg));
	assert_string_equal(msg, shown);
}

/* A wave of one unfamiliar FAIL (the fake answers every charge "unknown
 * mchId", wording billingd does not know) is not the customers' doing:
 * charging stops once WAVE_CUSTOMERS customers in a row got it, nobody is
 * dunned, /healthz and /metrics show the message, and charging resumes after
 * the back-off once the gateway answers otherwise. One customer's unfamiliar
 * FAIL stays a decline. */
static void test_unfamiliar_fail_wave(void **state)
{
	struct env *e = &the_env;
	long start = at("2026-03-02T09:00:00-05:00");
	struct cfg narrow;
	struct sched_stats st = {0};
	struct sched *s;
	char err[512], id[16], *out = NULL;
	long sent;

	(void)state;
	env_start(e, "sched_wave", NULL, 2000);
	for (int i = 1; i <= 30; i++) {
		snprintf(id, sizeof(id), "w%d", i);
		ts_enrol(e->db, e->gw, id, NULL);
		ts_subscribe(e->db, id, "weekly", start);
	}
	/* four in flight: the wave is seen before everything is sent */
	narrow = e->cfg;
	narrow.gateway.max_in_flight = 4;
	s = sched_new(&narrow, e->db, e->gw, "test-wave");
	assert_non_null(s);
	assert_int_equal(ts_fakegw_post(&e->fake, "faults",
	                                "{\"endpoint\":\"cc_purchasewithtoken\","
	                                "\"kind\":\"unfamiliar\",\"rate\":1}",
	                                NULL),
	                 200);
	assert_int_equal(sched_pass(s, start, &st, err, sizeof(err)), 0);
	/* the fake counts only the requests it processes: the charges tell.
	 * Those still queued when the wave was seen were not sent, and are
	 * recorded so at once (absent: their subscriptions stay as they are). */
	sent = ts_db_long(e->db, "SELECT count(*) FROM charges WHERE ret_msg = 'unknown mchId'");
	assert_true(sent >= WAVE_CUSTOMERS && sent <= WAVE_CUSTOMERS + 4);
	assert_int_equal(ts_db_long(e->db, "SELECT count(*) FROM charges"
	                                   " WHERE ret_msg IS DISTINCT FROM 'unknown mchId'"
	                                   "   AND NOT (state = 'failed'"
	                                   "            AND ret_msg = 'not sent: a gateway wave')"),
	                 0);
	check_wave(e, 0, "unknown mchId");
	assert_int_equal(metrics_render(NULL, 0, start, &out, err, sizeof(err)), 0);
	assert_non_null(strstr(out, "billing_gateway_wave{ret_msg=\"unknown mchId\"} 1\n"));
	free(out);
	/* backing off: a pass at once sends nothing */
	sent = ts_db_long(e->db, "SELECT count(*) FROM charges");
	assert_int_equal(sched_pass(s, start + 120, &st, err, sizeof(err)), 0);
	assert_int_equal(ts_db_long(e->db, "SELECT count(*) FROM charges"), sent);

	/* the gateway answers again: after the back-off everything is charged */
	assert_int_equal(ts_fakegw_post(&e->fake, "faults", "{\"clear\":true}", NULL), 200);
	ts_sleep_ms(5500);
	assert_int_equal(sched_pass(s, start + 180, &st, err, sizeof(err)), 0);
	check_wave(e, 1, "");

	/* one customer's unfamiliar FAIL is a decline */
	assert_int_equal(ts_fakegw_post(&e->fake, "faults",
	                                "{\"endpoint\":\"cc_purchasewithtoken\","
	                                "\"kind\":\"unfamiliar\",\"count\":1}",
	                                NULL),
	                 200);
	assert_int_equal(ts_db_long(e->db, "WITH u AS (UPDATE subscriptions SET next_charge_at ="
	                                   " next_charge_at + interval '1 year'"
	                                   " WHERE customer_id <> 'w1' RETURNING 1)"
	                                   " SELECT count(*) FROM u"),
	                 29);
	assert_int_equal(sched_pass(s, start + 8 * DAY, &st, err, sizeof(err)), 0);
	assert_int_equal(ts_db_long(e->db, "SELECT attempts FROM subscriptions"
	                                   " WHERE customer_id = 'w1'"),
	                 1);
	sched_free(s);
	env_stop(e);
}

static int teardown(void **state)
{
	(void)state;
	if (live)
		env_stop(live);
	return 0;
}

/* What the pump sent in the last lease is remembered (failover.h) and, when
 * a failover lost the intents, put back as unknown, each with its number,
 * customer and amount: 3,000 sends, several of the memory's blocks. A send
 * older than the window is forgotten. */
static void test_recent_sends_restored(void **state)
{
	struct env *e = &the_env;
	long start = at("2026-03-02T09:00:00-05:00"), sub, n = 3000;
	struct failover_recent *r = failover_recent_new(120), *w = failover_recent_new(0);
	char err[512], no[32], q[512];

	(void)state;
	assert_non_null(r);
	assert_non_null(w);
	sub = one_weekly(e, "sched_recent", "r1", start);
	snprintf(q, sizeof(q), "SELECT length(set_config('billing.now', '%ld', false))", start);
	ts_db_long(e->db, q);
	snprintf(q, sizeof(q),
	         "WITH s AS (INSERT INTO subscriptions (customer_id, plan_id, state, anchor)"
	         " SELECT customer_id, plan_id, state, anchor FROM subscriptions,"
	         " generate_series(2, %ld) WHERE id = %ld RETURNING id) SELECT max(id) FROM s",
	         n, sub);
	assert_int_equal(ts_db_long(e->db, q), sub + n - 1);

	snprintf(no, sizeof(no), "T%ld-0-1", sub);
	failover_recent_add(w, no, sub, "r1", 1000 + sub, start);
	ts_sleep_ms(1100);
	snprintf(no, sizeof(no), "T%ld-0-1", sub + 1);
	failover_recent_add(w, no, sub + 1, "r1", 1000 + sub + 1, start);
	assert_int_equal(failover_recent_restore(e->db, w, err, sizeof(err)), 1);
	assert_int_equal(ts_db_long(e->db, "SELECT min(subscription_id) FROM charges"), sub + 1);

	for (long id = sub; id < sub + n; id++) {
		snprintf(no, sizeof(no), "T%ld-0-1", id);
		failover_recent_add(r, no, id, "r1", 1000 + id, start);
	}
	assert_int_equal(failover_recent_restore(e->db, r, err, sizeof(err)), n - 1);
	assert_int_equal(ts_db_long(e->db, "SELECT count(*) FROM charges WHERE state = 'unknown'"
	                                   " AND customer_id = 'r1' AND period = 0 AND attempt = 1"
	                                   " AND amount_cents = 1000 + subscription_id"
	                                   " AND mch_order_no = 'T' || subscription_id || '-0-1'"),
	                 n);
	assert_int_equal(failover_recent_restore(e->db, r, err, sizeof(err)), 0);
	failover_recent_free(r);
	failover_recent_free(w);
}

/* A reload makes a new scheduler (billingd.c): what the old one sent in the
 * last lease goes with it, so that a failover after the reload still puts
 * back the intents it lost. */
static void test_sends_kept_over_reload(void **state)
{
	struct env *e = &the_env;
	long start = at("2026-03-02T09:00:00-05:00");
	struct failover_recent *sent;
	char err[512];

	(void)state;
	one_weekly(e, "sched_reload_sent", "k1", start);
	pass(e, start);
	assert_int_equal(
	    ts_db_long(e->db, "SELECT count(*) FROM charges WHERE state = 'succeeded'"), 1);
	sent = sched_take_sent(e->s);
	sched_free(e->s);
	e->s = sched_new(&e->cfg, e->db, e->gw, "test-scheduler");
	assert_non_null(e->s);
	sched_give_sent(e->s, sent);
	/* the promoted server lacks the charge: its intent was lost */
	ts_db_long(e->db,
	           "SELECT length(set_config('session_replication_role', 'replica', false))");
	ts_db_long(e->db, "WITH d AS (DELETE FROM charges RETURNING 1) SELECT count(*) FROM d");
	ts_db_long(e->db, "SELECT length(set_config('session_replication_role', 'origin', false))");
	assert_int_equal(sched_restore_sent(e->s, start, err, sizeof(err)), 1);
	assert_int_equal(ts_db_long(e->db, "SELECT count(*) FROM charges WHERE state = 'unknown'"
	                                   " AND mch_order_no LIKE '%-0-1'"),
	                 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(test_dunning, teardown),
	    cmocka_unit_test_teardown(test_unfamiliar_fail_wave, teardown),
	    cmocka_unit_test_teardown(test_binding_decline, teardown),
	    cmocka_unit_test_teardown(test_unknown_resolved_first, teardown),
	    cmocka_unit_test_teardown(test_recent_sends_restored, teardown),
	    cmocka_unit_test_teardown(test_sends_kept_over_reload, teardown),
	    cmocka_unit_test_teardown(test_duplicate_refusal_is_unknown, teardown),
	    cmocka_unit_test_teardown(test_bad_row_recorded_alone, teardown),
	    cmocka_unit_test_teardown(test_claim_conflict_logged, teardown),
	    cmocka_unit_test_teardown(test_recorder_holds_claims_back, teardown),
	    cmocka_unit_test_teardown(test_charge_now_error_after_claim_is_unknown, teardown),
	    cmocka_unit_test_teardown(test_year_clean, teardown),
	    cmocka_unit_test_teardown(test_year_with_faults, teardown),
	};
	if (getenv("TEST_FILTER"))
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
