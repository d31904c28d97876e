/* test_refunds.c: refunds_request / refunds_resolve against the real
 * PostgreSQL and build/fakegw over HTTP: partial and full refunds, voids,
 * refusals before sending, gateway FAILs and unknown outcomes resolved by
 * cc_query. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "db.h"
#include "gateway.h"
#include "refunds.h"
#include "support.h"

#define PREFIX "T"

static struct ts_fakegw fake;
static struct gw_client *gw;
static char url[512];
static PGconn *db;
static int charges_made;

/* How many requests the fake received on endpoint ep ("cc_refund"). */
static long fake_requests(const char *ep)
{
	cJSON *l = ts_fakegw_ledger(&fake);
	const cJSON *n =
	    cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(l, "requests"), ep);
	long v = cJSON_IsNumber(n) ? (long)n->valuedouble : 0;

	cJSON_Delete(l);
	return v;
}

/* The fake's order pay_order_id: its "refunded" cents, and *voided. */
static long fake_refunded(const char *pay_order_id, int *voided)
{
	cJSON *l = ts_fakegw_ledger(&fake), *o;
	long v = -1;

	cJSON_ArrayForEach(o, cJSON_GetObjectItemCaseSensitive(l, "orders"))
	{
		const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "payOrderId");
		if (cJSON_IsString(id) && strcmp(id->valuestring, pay_order_id) == 0) {
			v = (long)cJSON_GetObjectItemCaseSensitive(o, "refunded")->valuedouble;
			*voided = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "voided"));
		}
	}
	cJSON_Delete(l);
	return v;
}

static void fault(const char *kind)
{
	char json[160];

	/* ms: how long a latency fault holds the request. */
	snprintf(json, sizeof(json),
	         "{\"endpoint\":\"cc_refund\",\"kind\":\"%s\",\"count\":1,\"ms\":500}", kind);
	assert_int_equal(ts_fakegw_post(&fake, "faults", json, NULL), 200);
}

/* A charge the fake knows (cc_purchasewithtoken) recorded as succeeded in
 * our ledger, as the charge protocol would leave it; its payOrderId into pay. */
static void paid_charge(long amount, char *pay, size_t len)
{
	char mch[32], amt[24];
	struct gw_request req = {.call = GW_PURCHASE_TOKEN, .customer_id = "rc1", .amount = amount};
	struct gw_result res;
	char err[512];

	snprintf(mch, sizeof(mch), "TC%d", ++charges_made);
	req.mch_order_no = mch;
	assert_int_equal(gw_call(gw, &req, &res), GW_SUCCESS);
	snprintf(pay, len, "%s", res.order.pay_order_id);
	snprintf(amt, sizeof(amt), "%ld", amount);
	if (db_exec(db,
	            "INSERT INTO charges (mch_order_no, kind, customer_id, amount_cents, state, "
	            "pay_order_id) VALUES ($1, 'one_off', 'rc1', $2, 'succeeded', $3)",
	            3, (const char *[]){mch, amt, pay}, err, sizeof(err)) < 0)
		fail_msg("%s", err);
}

static int setup(void **state)
{
	struct cfg cfg;
	struct gw_request req = {
	    .call = GW_ADDUSER, .customer_id = "rc1", .return_url = "http://127.0.0.1:9/return"};
	struct gw_result res;
	char err[512], *location;

	(void)state;
	snprintf(url, sizeof(url), "%s", ts_db_new("refunds"));
	db = ts_db_connect(url);
	ts_fakegw_start(&fake, NULL);
	ts_cfg(&cfg, NULL, &fake);
	gw = gw_client_new(&cfg.gateway, err, sizeof(err));
	if (!gw)
		fail_msg("%s", err);
	/* Enrol the customer on the fake through its hosted page. */
	assert_int_equal(gw_call(gw, &req, &res), GW_SUCCESS);
	location = ts_fakegw_hosted(res.pay_url, "card=4501161234567214&expiry=0728");
	assert_non_null(location);
	assert_non_null(strstr(location, "retCode=SUCCESS"));
	free(location);
	ts_db_long(db, "INSERT INTO customers (customer_id, state) VALUES ('rc1', 'bound')");
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	gw_client_free(gw);
	ts_fakegw_stop(&fake);
	PQfinish(db);
	return 0;
}

static void test_partial_then_rest(void **state)
{
	char pay[64], err[512], want[32], sql[200];
	struct refund_row r;
	long before = fake_requests("cc_refund");
	int voided;

	(void)state;
	paid_charge(1000, pay, sizeof(pay));
	/* Dated on the billing clock (here 2026-01-15T12:00:00Z), not the database's. */
	assert_int_equal(
	    refunds_request(db, gw, PREFIX, pay, 0, 300, 1768478400, &r, err, sizeof(err)),
	    GW_SUCCESS);
	assert_string_equal(r.state, "succeeded");
	snprintf(want, sizeof(want), "%" PRId64, r.id);
	snprintf(sql, sizeof(sql),
	         "SELECT extract(epoch FROM settled_at)::bigint FROM refunds WHERE id = %s"
	         " AND trans_id IS NOT NULL AND pay_succ_time IS NOT NULL",
	         want);
	assert_int_equal(ts_db_long(db, sql), 1768478400);
	assert_int_equal(r.amount_cents, 300);
	assert_false(r.is_void);
	assert_string_equal(r.charge_pay_order_id, pay);
	assert_true(r.pay_order_id[0] != '\0');
	assert_string_not_equal(r.pay_order_id, pay);
	snprintf(want, sizeof(want), PREFIX "R%" PRId64, r.id);
	assert_string_equal(r.mch_refund_no, want);

	/* 0: all that remains. */
	assert_int_equal(
	    refunds_request(db, gw, PREFIX, pay, 0, 0, time(NULL), &r, err, sizeof(err)),
	    GW_SUCCESS);
	assert_int_equal(r.amount_cents, 700);
	assert_int_equal(fake_refunded(pay, &voided), 1000);
	assert_false(voided);

	assert_int_equal(
	    refunds_request(db, gw, PREFIX, pay, 0, 1, time(NULL), &r, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "exceeds the 0 cents remaining"));
	assert_int_equal(fake_requests("cc_refund"), before + 2);
}

static void test_over_refund_refused_unsent(void **state)
{
	char pay[64], err[512], want[160];
	struct refund_row r;
	long before = fake_requests("cc_refund");

	(void)state;
	paid_charge(1000, pay, sizeof(pay));
	assert_int_equal(
	    refunds_request(db, gw, PREFIX, pay, 0, 1500, time(NULL), &r, err, sizeof(err)), -1);
	snprintf(want, sizeof(want), "refund of 1500 cents exceeds the 1000 cents remaining on %s",
	         pay);
	assert_string_equal(err, want);
	assert_int_equal(fake_requests("cc_refund"), before);
	assert_int_equal(ts_db_long(db,
	                            "SELECT count(*) FROM refunds r JOIN charges c ON c.id = "
	                            "r.charge_id WHERE c.amount_cents = 1000 AND r.amount_cents "
	                            "= 1500"),
	                 0);
}

static void test_unknown_pay_order_id(void **state)
{
	char err[512];
	struct refund_row r;

	(void)state;
	assert_int_equal(
	    refunds_request(db, gw, PREFIX, "NOSUCH1", 0, 100, time(NULL), &r, err, sizeof(err)),
	    -1);
	assert_string_equal(err, "no succeeded charge with payOrderId NOSUCH1");
}

static void test_void_then_refund_refused(void **state)
{
	char pay[64], err[512];
	struct refund_row r;
	int voided = 0;

	(void)state;
	paid_charge(2500, pay, sizeof(pay));
	assert_int_equal(
	    refunds_request(db, gw, PREFIX, pay, 1, 0, time(NULL), &r, err, sizeof(err)),
	    GW_SUCCESS);
	assert_true(r.is_void);
	assert_int_equal(r.amount_cents, 2500);
	assert_string_equal(r.state, "succeeded");
	fake_refunded(pay, &voided);
	assert_true(voided);
	assert_int_equal(
	    refunds_request(db, gw, PREFIX, pay, 0, 1, time(NULL), &r, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "exceeds the 0 cents remaining"));
}

static void test_void_after_refund_refused(void **state)
{
	char pay[64], err[512], want[160];
	struct refund_row r;
	long voids = fake_requests("cc_void");

	(void)state;
	paid_charge(1000, pay, sizeof(pay));
	assert_int_equal(
	    refunds_request(db, gw, PREFIX, pay, 0, 100, time(NULL), &r, err, sizeof(err)),
	    GW_SUCCESS);
	assert_int_equal(
	    refunds_request(db, gw, PREFIX, pay, 1, 0, time(NULL), &r, err, sizeof(err)), -1);
	snprintf(want, sizeof(want), "cannot void %s: 100 cents of it are refunded or in doubt",
	         pay);
	assert_string_equal(err, want);
	assert_int_equal(fake_requests("cc_void"), voids);
}

struct request {
	const char *pay;
	int rc;
	struct refund_row row;
	char err[512];
};

static void *request_thread(void *arg)
{
	struct request *q = arg;

	q->rc = refunds_request(db, gw, PREFIX, q->pay, 0, 250, time(NULL), &q->row, q->err,
	                        sizeof(q->err));
	return NULL;
}

/* While the gateway is still answering, another connection already sees
 * the refund, pending: the intent was committed before the call. */
static void test_intent_committed_before_call(void **state)
{
	char pay[64];
	struct request q = {.pay = pay, .rc = -9};
	PGconn *other = ts_db_connect(url);
	pthread_t th;
	long seen = 0;

	(void)state;
	paid_charge(1000, pay, sizeof(pay));
	fault("latency");
	assert_int_equal(pthread_create(&th, NULL, request_thread, &q), 0);
	for (int i = 0; i < 200 && !seen; i++) {
		seen = ts_db_long(other, "SELECT count(*) FROM refunds WHERE state = 'pending'");
		usleep(5000);
	}
	pthread_join(th, NULL);
	PQfinish(other);
	assert_int_equal(seen, 1);
	assert_int_equal(q.rc, GW_SUCCESS);
	assert_string_equal(q.row.state, "succeeded");
}

/* Several billctl refunds of one charge at once, each on its own
 * connection at the given default isolation level. */
#define RACERS 6

struct racer {
	const char *pay, *isolation;
	pthread_barrier_t *go;
	struct gw_client *gw; /* its own: gw_call is not for two threads at once */
	int rc;
	char err[512];
};

static void *racer_thread(void *arg)
{
	struct racer *t = arg;
	struct refund_row row;
	PGconn *c = db_connect(url, "racer", t->err, sizeof(t->err));
	const char *p[1] = {t->isolation};

	t->rc = -9;
	/* a writing connection declares its billing clock (the events it writes) */
	if (c && db_set_now(c, time(NULL), t->err, sizeof(t->err)) == 0 &&
	    db_exec(c, "SELECT set_config('default_transaction_isolation', $1, false)", 1, p,
	            t->err, sizeof(t->err)) == 0) {
		pthread_barrier_wait(t->go);
		t->rc = refunds_request(c, t->gw, PREFIX, t->pay, 0, 300, time(NULL), &row, t->err,
		                        sizeof(t->err));
	} else {
		pthread_barrier_wait(t->go);
	}
	PQfinish(c);
	return NULL;
}

/* At every isolation level: three of the six 300-cent refunds of a 1000
 * charge go through, the others are refused before sending (never a
 * serialization error: the request retries it), and nothing exceeds. */
static void test_concurrent_requests_every_isolation(void **state)
{
	static const char *const levels[] = {"read committed", "repeatable read", "serializable"};

	(void)state;
	for (size_t l = 0; l < sizeof(levels) / sizeof(levels[0]); l++) {
		char pay[64], sql[256], err[256];
		struct racer r[RACERS];
		struct cfg cfg;
		pthread_t th[RACERS];
		pthread_barrier_t go;
		int ok = 0, voided;

		paid_charge(1000, pay, sizeof(pay));
		pthread_barrier_init(&go, NULL, RACERS);
		ts_cfg(&cfg, NULL, &fake);
		for (int i = 0; i < RACERS; i++) {
			r[i] = (struct racer){.pay = pay, .isolation = levels[l], .go = &go};
			r[i].gw = gw_client_new(&cfg.gateway, err, sizeof(err));
			assert_non_null(r[i].gw);
		}
		for (int i = 0; i < RACERS; i++)
			assert_int_equal(pthread_create(&th[i], NULL, racer_thread, &r[i]), 0);
		for (int i = 0; i < RACERS; i++) {
			pthread_join(th[i], NULL);
			gw_client_free(r[i].gw);
		}
		pthread_barrier_destroy(&go);
		for (int i = 0; i < RACERS; i++) {
			if (r[i].rc == GW_SUCCESS) {
				ok++;
				continue;
			}
			if (r[i].rc != -1 || !strstr(r[i].err, "exceeds the 100 cents remaining") ||
			    strchr(r[i].err, '\n'))
				fail_msg("%s: rc %d: %s", levels[l], r[i].rc, r[i].err);
		}
		assert_int_equal(ok, 3);
		snprintf(sql, sizeof(sql),
		         "SELECT sum(r.amount_cents) FROM refunds r JOIN charges c ON c.id = "
		         "r.charge_id WHERE c.pay_order_id = '%s' AND r.state <> 'failed'",
		         pay);
		assert_int_equal(ts_db_long(db, sql), 900);
		assert_int_equal(fake_refunded(pay, &voided), 900);
	}
}

/* The gateway processed the refund but the answer was lost: it stays
 * 'unknown', still counts against the charge, and cc_query settles it. */
static void test_unknown_resolved_succeeded(void **state)
{
	char pay[64], err[512];
	struct refund_row r, again;
	int64_t id;
	int voided;

	(void)state;
	paid_charge(1000, pay, sizeof(pay));
	fault("drop_after");
	assert_int_equal(
	    refunds_request(db, gw, PREFIX, pay, 0, 400, time(NULL), &r, err, sizeof(err)),
	    GW_UNKNOWN);
	assert_string_equal(r.state, "unknown");
	assert_non_null(strstr(err, "outcome unknown"));
	assert_int_equal(fake_refunded(pay, &voided), 400);
	id = r.id;

	/* A new request of the charge settles the open one first: found made,
	 * it is the answer and nothing new is sent. */
	{
		long refunds = fake_requests("cc_refund");

		assert_int_equal(
		    refunds_request(db, gw, PREFIX, pay, 0, 400, time(NULL), &r, err, sizeof(err)),
		    GW_SUCCESS);
		assert_true(r.resolved_earlier);
		assert_int_equal(r.id, id);
		assert_int_equal(fake_requests("cc_refund"), refunds);
		assert_int_equal(fake_refunded(pay, &voided), 400);
	}
	assert_int_equal(
	    refunds_request(db, gw, PREFIX, pay, 0, 700, time(NULL), &r, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "exceeds the 600 cents remaining"));

	assert_int_equal(refunds_resolve(db, gw, id, time(NULL), &r, err, sizeof(err)), GW_SUCCESS);
	assert_string_equal(r.state, "succeeded");
	assert_true(r.pay_order_id[0] != '\0');
	assert_int_equal(refunds_get(db, id, &again, err, sizeof(err)), 0);
	assert_string_equal(again.state, "succeeded");
	/* Settled: resolving again asks nothing. */
	{
		long queries = fake_requests("cc_query");
		assert_int_equal(refunds_resolve(db, gw, id, time(NULL), &r, err, sizeof(err)),
		                 GW_SUCCESS);
		assert_int_equal(fake_requests("cc_query"), queries);
	}
}

/* The request never reached the gateway: cc_query proves it absent, the
 * refund fails and the amount is free again. */
static void test_unknown_resolved_failed(void **state)
{
	char pay[64], err[512];
	struct refund_row r;
	int voided;

	(void)state;
	paid_charge(1000, pay, sizeof(pay));
	fault("http429");
	assert_int_equal(
	    refunds_request(db, gw, PREFIX, pay, 0, 1000, time(NULL), &r, err, sizeof(err)),
	    GW_UNKNOWN);
	assert_string_equal(r.state, "unknown");
	assert_int_equal(fake_refunded(pay, &voided), 0);
	assert_int_equal(refunds_resolve(db, gw, r.id, time(NULL), &r, err, sizeof(err)), GW_FAIL);
	assert_string_equal(r.state, "failed");
	assert_non_null(strstr(r.ret_msg, "not at the gateway"));
	assert_int_equal(
	    refunds_request(db, gw, PREFIX, pay, 0, 1000, time(NULL), &r, err, sizeof(err)),
	    GW_SUCCESS);
}

/* A gateway FAIL is a definite failure: recorded, and it no longer counts. */
static void test_fail_recorded(void **state)
{
	char pay[64], err[512];
	struct refund_row r;
	struct gw_request ext = {.call = GW_REFUND, .mch_refund_no = "EXT1", .amount = 900};
	struct gw_result res;

	(void)state;
	paid_charge(1000, pay, sizeof(pay));
	/* Refunded behind our back (the gateway's portal), so the fake refuses. */
	ext.pay_order_id = pay;
	assert_int_equal(gw_call(gw, &ext, &res), GW_SUCCESS);
	assert_int_equal(
	    refunds_request(db, gw, PREFIX, pay, 0, 500, time(NULL), &r, err, sizeof(err)),
	    GW_FAIL);
	assert_string_equal(r.state, "failed");
	assert_string_equal(r.ret_msg, "refund amount exceeds the order");
	assert_non_null(strstr(err, "refused by the gateway"));
	assert_int_equal(
	    refunds_request(db, gw, PREFIX, pay, 0, 100, time(NULL), &r, err, sizeof(err)),
	    GW_SUCCESS);
}

/* A pending refund may still be on its way; only an old one is resolved. */
static void test_resolve_pending(void **state)
{
	char pay[64], err[512], id[24];
	struct refund_row r;
	PGresult *res;

	(void)state;
	paid_charge(1000, pay, sizeof(pay));
	res =
	    db_query(db,
	             "INSERT INTO refunds (mch_refund_no, kind, charge_id, amount_cents) SELECT "
	             "'TRX1', 'refund', id, 100 FROM charges WHERE pay_order_id = $1 RETURNING id",
	             1, (const char *[]){pay}, err, sizeof(err));
	assert_non_null(res);
	snprintf(id, sizeof(id), "%s", db_str(res, 0, 0));
	PQclear(res);
	assert_int_equal(refunds_resolve(db, gw, atoll(id), time(NULL), &r, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "may still be on its way"));
	assert_string_equal(r.state, "pending");

	assert_int_equal(db_exec(db,
	                         "UPDATE refunds SET created_at = now() - interval '1 hour' WHERE "
	                         "id = $1",
	                         1, (const char *[]){id}, err, sizeof(err)),
	                 0);
	assert_int_equal(refunds_resolve(db, gw, atoll(id), time(NULL), &r, err, sizeof(err)),
	                 GW_FAIL);
	assert_string_equal(r.state, "failed");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_partial_then_rest),
	    cmocka_unit_test(test_over_refund_refused_unsent),
	    cmocka_unit_test(test_unknown_pay_order_id),
	    cmocka_unit_test(test_void_then_refund_refused),
	    cmocka_unit_test(test_void_after_refund_refused),
	    cmocka_unit_test(test_intent_committed_before_call),
	    cmocka_unit_test(test_concurrent_requests_every_isolation),
	    cmocka_unit_test(test_unknown_resolved_succeeded),
	    cmocka_unit_test(test_unknown_resolved_failed),
	    cmocka_unit_test(test_fail_recorded),
	    cmocka_unit_test(test_resolve_pending),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
