/* test_gateway.c: the gateway client against build/fakegw over real HTTP:
 * every endpoint's success and failure, every fault kind classified for
 * cc_purchasewithtoken and cc_query, no silent re-send on a reused
 * connection, refusals that send nothing, many requests through gw_multi,
 * and a real returnUrl redirect verified with gw_fields. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "gateway.h"
#include "support.h"

#define CARD    "card=4501161234567214&expiry=0728"
#define RETURN  "http://127.0.0.1:1/iotpay/return"
#define FAST_MS 600 /* client timeout in the fault tests */

static struct ts_fakegw fake;
static int seq;

static int start_fake(void **state)
{
	(void)state;
	ts_fakegw_start(&fake, "--seed 7");
	return 0;
}

static int stop_fake(void **state)
{
	(void)state;
	ts_fakegw_stop(&fake);
	return 0;
}

static int reset_fake(void **state)
{
	(void)state;
	return ts_fakegw_post(&fake, "reset", "{}", NULL) == 200 ? 0 : -1;
}

static struct gw_client *client(long timeout_ms, const char *key)
{
	struct cfg c;
	char err[256];
	struct gw_client *gw;

	ts_cfg(&c, NULL, &fake);
	c.gateway.timeout_ms = timeout_ms;
	if (key)
		snprintf(c.gateway.merchant_key, sizeof(c.gateway.merchant_key), "%s", key);
	gw = gw_client_new(&c.gateway, err, sizeof(err));
	if (!gw)
		fail_msg("gw_client_new: %s", err);
	return gw;
}

static const char *next_id(const char *prefix)
{
	static char ids[8][32];
	char *p = ids[seq % 8];

	snprintf(p, 32, "%s%d", prefix, ++seq);
	return p;
}

static void fault(const char *endpoint, const char *kind, int count, int ms)
{
	char json[256];

	snprintf(json, sizeof(json), "{\"endpoint\":\"%s\",\"kind\":\"%s\",\"count\":%d,\"ms\":%d}",
	         endpoint, kind, count, ms);
	assert_int_equal(ts_fakegw_post(&fake, "faults", json, NULL), 200);
}

static long requests(const char *endpoint)
{
	cJSON *l = ts_fakegw_ledger(&fake);
	const cJSON *n = cJSON_GetObjectItemCaseSensitive(
	    cJSON_GetObjectItemCaseSensitive(l, "requests"), endpoint);
	long v = cJSON_IsNumber(n) ? (long)n->valuedouble : 0;

	cJSON_Delete(l);
	return v;
}

static long all_requests(void)
{
	cJSON *l = ts_fakegw_ledger(&fake);
	const cJSON *it;
	long v = 0;

	cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(l, "requests")) v +=
	    (long)it->valuedouble;
	cJSON_Delete(l);
	return v;
}

/* How many orders the fake holds with this mchOrderNo. */
static int orders_with(const char *mch_order_no)
{
	cJSON *l = ts_fakegw_ledger(&fake);
	const cJSON *o;
	int n = 0;

	cJSON_ArrayForEach(o, cJSON_GetObjectItemCaseSensitive(l, "orders"))
	{
		const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, "mchOrderNo");

		n += cJSON_IsString(m) && strcmp(m->valuestring, mch_order_no) == 0;
	}
	cJSON_Delete(l);
	return n;
}

/* Enrols customer_id through the hosted page; returns the redirect (free). */
static char *enrol(struct gw_client *gw, const char *customer_id, const char *card_query)
{
	struct gw_request req = {
	    .call = GW_ADDUSER, .customer_id = customer_id, .return_url = RETURN};
	struct gw_result res;
	char *loc;

	assert_int_equal(gw_call(gw, &req, &res), GW_SUCCESS);
	assert_true(strncmp(res.pay_url, "http://127.0.0.1:", 17) == 0);
	loc = ts_fakegw_hosted(res.pay_url, card_query);
	assert_non_null(loc);
	return loc;
}

static enum gw_outcome charge(struct gw_client *gw, const char *customer_id, const char *mch,
                              long amount, struct gw_result *res)
{
	struct gw_request req = {.call = GW_PURCHASE_TOKEN,
	                         .mch_order_no = mch,
	                         .customer_id = customer_id,
	                         .amount = amount,
	                         .subject = "Plan: Pro (monthly)",
	                         .body = "période 2026-01 — ünïcödé"};

	return gw_call(gw, &req, res);
}

static enum gw_outcome query_mch(struct gw_client *gw, const char *mch, struct gw_result *res)
{
	struct gw_request req = {.call = GW_QUERY, .mch_order_no = mch};

	return gw_call(gw, &req, res);
}

static void test_adduser_isbinding_returnurl(void **state)
{
	struct gw_client *gw = client(2000, NULL);
	struct gw_request bind = {.call = GW_ISBINDING, .customer_id = "cust-1"};
	struct gw_result res;
	struct gw_fields f;
	char err[128], *loc, *qs;

	(void)state;
	assert_int_equal(gw_call(gw, &bind, &res), GW_FAIL);
	assert_string_equal(res.ret_msg, "customer not bound");

	loc = enrol(gw, "cust-1", CARD);
	/* the redirect to our returnUrl, signed by the gateway */
	assert_true(strncmp(loc, RETURN "?", strlen(RETURN) + 1) == 0);
	qs = strchr(loc, '?') + 1;
	assert_int_equal(gw_fields_from_query(qs, &f, err, sizeof(err)), 0);
	assert_string_equal(gw_fields_get(&f, "retCode"), "SUCCESS");
	assert_string_equal(gw_fields_get(&f, "customerId"), "cust-1");
	assert_string_equal(gw_fields_get(&f, "cardNumber"), "450116XXXXXX7214");
	assert_string_equal(gw_fields_get(&f, "expirationDate"), "0728");
	assert_int_equal(gw_fields_verify(&f, TS_KEY), 1);
	assert_int_equal(gw_fields_verify(&f, "not-the-key"), 0);
	gw_fields_free(&f);
	/* the same redirect with another customer id does not verify */
	{
		char *forged = malloc(strlen(qs) + 8), *at;

		assert_non_null(forged);
		strcpy(forged, qs);
		at = strstr(forged, "cust-1");
		assert_non_null(at);
		at[5] = '2';
		assert_int_equal(gw_fields_from_query(forged, &f, err, sizeof(err)), 0);
		assert_int_equal(gw_fields_verify(&f, TS_KEY), 0);
		gw_fields_free(&f);
		free(forged);
	}
	free(loc);

	assert_int_equal(gw_call(gw, &bind, &res), GW_SUCCESS);

	/* a refused card: signed retCode=FAIL, still unbound */
	loc = enrol(gw, "cust-2", CARD "&result=fail");
	assert_int_equal(gw_fields_from_query(strchr(loc, '?') + 1, &f, err, sizeof(err)), 0);
	assert_string_equal(gw_fields_get(&f, "retCode"), "FAIL");
	assert_int_equal(gw_fields_verify(&f, TS_KEY), 1);
	gw_fields_free(&f);
	free(loc);
	bind.customer_id = "cust-2";
	assert_int_equal(gw_call(gw, &bind, &res), GW_FAIL);
	gw_client_free(gw);
}

static void test_purchase_page(void **state)
{
	struct gw_client *gw = client(2000, NULL);
	const char *mch = next_id("pp");
	struct gw_request req = {.call = GW_PURCHASE,
	                         .mch_order_no = mch,
	                         .customer_id = "walk-in",
	                         .amount = 4200,
	                         .notify_url = "http://127.0.0.1:1/iotpay/notify",
	                         .return_url = RETURN};
	struct gw_result res;
	struct gw_fields f;
	char err[128], *loc;

	(void)state;
	assert_int_equal(gw_call(gw, &req, &res), GW_SUCCESS);
	assert_non_null(strstr(res.pay_url, "/hosted/purchase?token="));
	loc = ts_fakegw_hosted(res.pay_url, CARD);
	assert_non_null(loc);
	assert_int_equal(gw_fields_from_query(strchr(loc, '?') + 1, &f, err, sizeof(err)), 0);
	assert_int_equal(gw_fields_verify(&f, TS_KEY), 1);
	assert_string_equal(gw_fields_get(&f, "mchOrderNo"), mch);
	gw_fields_free(&f);
	free(loc);

	assert_int_equal(query_mch(gw, mch, &res), GW_SUCCESS);
	assert_int_equal(res.order.amount, 4200);
	assert_int_equal(res.order.status, 2);

	/* the same mchOrderNo again: refused, which proves an order exists, so
	 * its outcome is unknown (cc_query tells) */
	assert_int_equal(gw_call(gw, &req, &res), GW_UNKNOWN);
	assert_string_equal(res.ret_msg, "duplicate mchOrderNo");
	gw_client_free(gw);
}

static void test_charge_refund_void_query(void **state)
{
	struct gw_client *gw = client(2000, NULL);
	struct gw_result res, paid;
	const char *mch = next_id("o");
	char pay_id[64];
	struct gw_request rq = {.call = GW_REFUND, .mch_refund_no = "r1", .amount = 300};
	struct gw_request vq = {.call = GW_VOID, .mch_refund_no = "v1"};
	struct gw_request qp = {.call = GW_QUERY};

	(void)state;
	free(enrol(gw, "c1", CARD));

	/* charge */
	assert_int_equal(charge(gw, "c1", mch, 1500, &paid), GW_SUCCESS);
	assert_int_equal(paid.has_order, 1);
	assert_string_equal(paid.order.mch_order_no, mch);
	assert_true(paid.order.pay_order_id[0] != '\0');
	assert_int_equal(paid.order.status, 2);
	assert_int_equal(paid.order.amount, 1500);
	assert_int_equal(paid.http_status, 200);
	snprintf(pay_id, sizeof(pay_id), "%s", paid.order.pay_order_id);

	/* a duplicate is no failure (the order exists); declined, unbound
	 * customer are */
	assert_int_equal(charge(gw, "c1", mch, 1500, &res), GW_UNKNOWN);
	assert_string_equal(res.ret_msg, "duplicate mchOrderNo");
	assert_int_equal(
	    ts_fakegw_post(&fake, "decline", "{\"customerId\":\"c1\",\"count\":1}", NULL), 200);
	assert_int_equal(charge(gw, "c1", next_id("o"), 1500, &res), GW_FAIL);
	assert_string_equal(res.ret_msg, "card declined");
	assert_int_equal(charge(gw, "nobody", next_id("o"), 1500, &res), GW_FAIL);
	assert_string_equal(res.ret_msg, "customer not bound");

	/* query: by mchOrderNo, by payOrderId, absent */
	assert_int_equal(query_mch(gw, mch, &res), GW_SUCCESS);
	assert_string_equal(res.order.pay_order_id, pay_id);
	qp.pay_order_id = pay_id;
	assert_int_equal(gw_call(gw, &qp, &res), GW_SUCCESS);
	assert_string_equal(res.order.mch_order_no, mch);
	assert_string_equal(res.order.pay_type, "pay");
	assert_int_equal(query_mch(gw, "never-sent", &res), GW_FAIL);
	assert_string_equal(res.ret_msg, "order not exist");

	/* refund part, then too much, then void refused after a refund */
	rq.pay_order_id = pay_id;
	assert_int_equal(gw_call(gw, &rq, &res), GW_SUCCESS);
	assert_string_equal(res.order.pay_type, "refund");
	assert_string_equal(res.order.original_order_id, pay_id);
	assert_int_equal(res.order.amount, 300);
	rq.mch_refund_no = "r2";
	rq.amount = 1201;
	assert_int_equal(gw_call(gw, &rq, &res), GW_FAIL);
	assert_string_equal(res.ret_msg, "refund amount exceeds the order");
	vq.pay_order_id = pay_id;
	assert_int_equal(gw_call(gw, &vq, &res), GW_FAIL);
	assert_string_equal(res.ret_msg, "order already refunded");

	/* void a fresh charge */
	assert_int_equal(charge(gw, "c1", next_id("o"), 990, &paid), GW_SUCCESS);
	vq.pay_order_id = paid.order.pay_order_id;
	vq.mch_refund_no = "v2";
	assert_int_equal(gw_call(gw, &vq, &res), GW_SUCCESS);
	assert_string_equal(res.order.pay_type, "void");
	assert_int_equal(res.order.amount, 990);
	vq.mch_refund_no = "v3";
	assert_int_equal(gw_call(gw, &vq, &res), GW_FAIL);
	assert_string_equal(res.ret_msg, "order already voided");

	/* isbinding after the card was dropped */
	assert_int_equal(ts_fakegw_post(&fake, "unbind", "{\"customerId\":\"c1\"}", NULL), 200);
	{
		struct gw_request b = {.call = GW_ISBINDING, .customer_id = "c1"};

		assert_int_equal(gw_call(gw, &b, &res), GW_FAIL);
	}
	gw_client_free(gw);
}

/* With the wrong key every call is refused by the gateway ("sign error"):
 * a FAIL, except where FAIL would claim something it does not prove. */
static void test_wrong_key(void **state)
{
	struct gw_client *good = client(2000, NULL), *gw = client(2000, "WRONGKEY");
	const struct gw_request reqs[] = {
	    {.call = GW_PURCHASE,
	     .mch_order_no = "wk1",
	     .customer_id = "c1",
	     .amount = 100,
	     .notify_url = "http://n",
	     .return_url = RETURN},
	    {.call = GW_ADDUSER, .customer_id = "c1", .return_url = RETURN},
	    {.call = GW_PURCHASE_TOKEN, .mch_order_no = "wk2", .customer_id = "c1", .amount = 100},
	    {.call = GW_REFUND, .mch_refund_no = "wk3", .pay_order_id = "P1", .amount = 100},
	    {.call = GW_VOID, .mch_refund_no = "wk4", .pay_order_id = "P1"},
	};
	struct gw_request q = {.call = GW_QUERY, .mch_order_no = "wk2"};
	struct gw_request b = {.call = GW_ISBINDING, .customer_id = "c1"};
	struct gw_result res;

	(void)state;
	free(enrol(good, "c1", CARD));
	for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
		assert_int_equal(gw_call(gw, &reqs[i], &res), GW_FAIL);
		assert_string_equal(res.ret_msg, "sign error");
	}
	assert_int_equal(gw_call(gw, &q, &res), GW_UNKNOWN);
	assert_non_null(strstr(res.detail, "sign error"));
	assert_int_equal(gw_call(gw, &b, &res), GW_UNKNOWN);
	assert_null(strstr(res.detail, "WRONGKEY"));
	gw_client_free(gw);
	gw_client_free(good);
}

struct fault_case {
	const char *kind;
	int ms;
	enum gw_outcome token, query; /* for cc_purchasewithtoken, cc_query */
	const char *detail;
};

static const struct fault_case fault_cases[] = {
    {"drop_before", 0, GW_UNKNOWN, GW_UNKNOWN, NULL},
    {"drop_after", 0, GW_UNKNOWN, GW_UNKNOWN, NULL},
    {"hang_after", 2 * FAST_MS, GW_UNKNOWN, GW_UNKNOWN, "timeout"},
    {"hang_after", 50, GW_UNKNOWN, GW_UNKNOWN, NULL}, /* then closes */
    {"http5xx", 0, GW_UNKNOWN, GW_UNKNOWN, "HTTP status 502"},
    {"http429", 0, GW_UNKNOWN, GW_UNKNOWN, "HTTP status 429"},
    {"garbage", 0, GW_UNKNOWN, GW_UNKNOWN, "unparseable"},
    {"garbage", 0, GW_UNKNOWN, GW_UNKNOWN, "unparseable"}, /* both garbage forms */
    {"garbage", 0, GW_UNKNOWN, GW_UNKNOWN, "unparseable"},
    {"busy", 0, GW_FAIL, GW_UNKNOWN, NULL},
    {"latency", 100, GW_SUCCESS, GW_SUCCESS, NULL},
    {"latency", 2 * FAST_MS, GW_UNKNOWN, GW_UNKNOWN, "timeout"},
};

/* Each fault on a fresh client (a new connection), as the first request. */
static void test_faults(void **state)
{
	struct gw_client *setup = client(2000, NULL);
	struct gw_result res;
	char paid[32];

	(void)state;
	free(enrol(setup, "c1", CARD));
	snprintf(paid, sizeof(paid), "%s", next_id("f"));
	assert_int_equal(charge(setup, "c1", paid, 100, &res), GW_SUCCESS);
	gw_client_free(setup);

	for (size_t i = 0; i < sizeof(fault_cases) / sizeof(fault_cases[0]); i++) {
		const struct fault_case *fc = &fault_cases[i];
		struct gw_client *gw = client(FAST_MS, NULL);
		const char *mch = next_id("f");
		enum gw_outcome o;

		fault("cc_purchasewithtoken", fc->kind, 1, fc->ms);
		o = charge(gw, "c1", mch, 100, &res);
		if (o != fc->token || (fc->detail && !strstr(res.detail, fc->detail)))
			fail_msg("%s %d ms, charge: %s \"%s\"", fc->kind, fc->ms,
			         gw_outcome_name(o), res.detail);
		gw_client_free(gw);

		gw = client(FAST_MS, NULL);
		fault("cc_query", fc->kind, 1, fc->ms);
		o = query_mch(gw, paid, &res);
		if (o != fc->query || (fc->detail && !strstr(res.detail, fc->detail)))
			fail_msg("%s %d ms, query: %s \"%s\"", fc->kind, fc->ms, gw_outcome_name(o),
			         res.detail);
		gw_client_free(gw);
	}
	/* the timeouts took about the client's timeout, not the fake's hang */
	{
		struct gw_client *gw = client(FAST_MS, NULL);

		fault("cc_query", "hang_after", 1, 3000);
		assert_int_equal(query_mch(gw, paid, &res), GW_UNKNOWN);
		assert_true(res.seconds >= 0.9 * FAST_MS / 1000.0);
		assert_true(res.seconds < 2.0 * FAST_MS / 1000.0);
		gw_client_free(gw);
	}
}

/* libcurl re-sends a request whose reused keep-alive connection died with
 * no answer; after the gateway processed it that would be a second charge.
 * The client must report UNKNOWN and send nothing more. */
static void test_no_resend_on_reused_connection(void **state)
{
	struct gw_client *gw = client(2000, NULL);
	struct gw_result res;
	const char *lost;
	char lost_id[32];

	(void)state;
	free(enrol(gw, "c1", CARD));
	assert_int_equal(charge(gw, "c1", next_id("k"), 100, &res), GW_SUCCESS);
	for (int k = 0; k < 2; k++) {
		const char *kind = k ? "hang_after" : "drop_after";
		long before = requests("cc_purchasewithtoken");

		assert_int_equal(charge(gw, "c1", next_id("k"), 100, &res), GW_SUCCESS); /* warm */
		fault("cc_purchasewithtoken", kind, 1, 20);
		lost = next_id("k");
		snprintf(lost_id, sizeof(lost_id), "%s", lost);
		assert_int_equal(charge(gw, "c1", lost_id, 100, &res), GW_UNKNOWN);
		/* it was charged, exactly once, and sent exactly once */
		assert_int_equal(orders_with(lost_id), 1);
		assert_int_equal(requests("cc_purchasewithtoken"), before + 2);
		/* the unknown resolves by query; the client recovers */
		assert_int_equal(query_mch(gw, lost_id, &res), GW_SUCCESS);
		assert_int_equal(res.order.status, 2);
		assert_int_equal(charge(gw, "c1", next_id("k"), 100, &res), GW_SUCCESS);
	}
	gw_client_free(gw);
}

static void test_refusals_send_nothing(void **state)
{
	struct gw_client *gw = client(2000, NULL);
	const struct gw_request bad[] = {
	    {.call = GW_PURCHASE_TOKEN,
	     .mch_order_no = "0123456789012345678901234567890",
	     .customer_id = "c1",
	     .amount = 100},
	    {.call = GW_PURCHASE_TOKEN, .mch_order_no = "o", .customer_id = "c1", .amount = 0},
	    {.call = GW_ADDUSER, .customer_id = "c1"},
	    {.call = GW_QUERY, .mch_order_no = "a", .pay_order_id = "b"},
	    {.call = GW_REFUND, .mch_refund_no = "r", .pay_order_id = "P", .amount = -1},
	};
	struct gw_multi *m = gw_multi_new(gw, 4);
	struct gw_result res;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(gw_call(gw, &bad[i], &res), GW_INVALID);
		assert_int_equal(gw_multi_submit(m, &bad[i], NULL, NULL, &res), GW_INVALID);
	}
	assert_int_equal(gw_multi_pending(m), 0);
	assert_int_equal(gw_multi_run(m, 50), 0);
	assert_int_equal(all_requests(), 0);
	gw_multi_free(m);
	gw_client_free(gw);
}

struct tally {
	int done, success, other;
	double max_seconds;
};

static void count_done(void *udata, const struct gw_result *res)
{
	struct tally *t = udata;

	t->done++;
	if (res->outcome == GW_SUCCESS && res->order.status == 2)
		t->success++;
	else
		t->other++;
	if (res->seconds > t->max_seconds)
		t->max_seconds = res->seconds;
}

static void test_many_through_multi(void **state)
{
	enum { N = 600 };
	struct gw_client *gw = client(5000, NULL);
	struct gw_multi *m = gw_multi_new(gw, 8);
	struct tally t = {0};
	static char ids[N][16];
	int loops = 0;

	(void)state;
	free(enrol(gw, "c1", CARD));
	assert_non_null(m);
	for (int i = 0; i < N; i++) {
		struct gw_request req = {.call = GW_PURCHASE_TOKEN,
		                         .customer_id = "c1",
		                         .amount = 100 + i,
		                         .mch_order_no = ids[i]};

		snprintf(ids[i], sizeof(ids[i]), "m%d", i);
		assert_int_equal(gw_multi_submit(m, &req, count_done, &t, NULL), 0);
	}
	assert_int_equal(gw_multi_pending(m), N);
	while (gw_multi_pending(m) > 0 && loops++ < 100000)
		assert_true(gw_multi_run(m, 1000) >= 0);
	assert_int_equal(t.done, N);
	assert_int_equal(t.success, N);
	assert_int_equal(t.other, 0);
	assert_int_equal(requests("cc_purchasewithtoken"), N);
	for (int i = 0; i < N; i += 97)
		assert_int_equal(orders_with(ids[i]), 1);
	gw_multi_free(m);
	gw_client_free(gw);
}

/* A request refused mid-batch does not disturb the others, and done may
 * submit more work from inside gw_multi_run. */
struct chain {
	struct gw_multi *m;
	int left, done;
};

static void chain_done(void *udata, const struct gw_result *res)
{
	struct chain *c = udata;
	struct gw_request req = {.call = GW_QUERY, .mch_order_no = "nope"};

	assert_int_equal(res->outcome, GW_FAIL);
	c->done++;
	if (c->left-- > 0)
		assert_int_equal(gw_multi_submit(c->m, &req, chain_done, c, NULL), 0);
}

static void test_submit_from_done(void **state)
{
	struct gw_client *gw = client(2000, NULL);
	struct chain c = {.m = gw_multi_new(gw, 2), .left = 20};
	struct gw_request req = {.call = GW_QUERY, .mch_order_no = "nope"};

	(void)state;
	assert_int_equal(gw_multi_submit(c.m, &req, chain_done, &c, NULL), 0);
	while (gw_multi_pending(c.m) > 0)
		assert_true(gw_multi_run(c.m, 1000) >= 0);
	assert_int_equal(c.done, 21);
	gw_multi_free(c.m);
	gw_client_free(gw);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup(test_adduser_isbinding_returnurl, reset_fake),
	    cmocka_unit_test_setup(test_purchase_page, reset_fake),
	    cmocka_unit_test_setup(test_charge_refund_void_query, reset_fake),
	    cmocka_unit_test_setup(test_wrong_key, reset_fake),
	    cmocka_unit_test_setup(test_faults, reset_fake),
	    cmocka_unit_test_setup(test_no_resend_on_reused_connection, reset_fake),
	    cmocka_unit_test_setup(test_refusals_send_nothing, reset_fake),
	    cmocka_unit_test_setup(test_many_through_multi, reset_fake),
	    cmocka_unit_test_setup(test_submit_from_done, reset_fake),
	};
	return cmocka_run_group_tests(tests, start_fake, stop_fake);
}
