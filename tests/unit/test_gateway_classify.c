/* test_gateway_classify.c: the gateway client's rules that need no gateway:
 * how every kind of answer is classified (gw_classify), and requests refused
 * before sending (field limits, required fields), proven not sent because
 * the same client gets UNKNOWN for a valid request to the same address. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <cmocka.h>

#include "gateway.h"
#include "support.h"

struct case_ {
	enum gw_call call;
	long status;
	const char *body;
	enum gw_outcome want;
	const char *detail; /* substring of res.detail, or NULL */
};

#define ORDER(st) "{\"payOrderId\":\"P1\",\"mchOrderNo\":\"o1\",\"status\":" st "}"
#define OK(order) "{\"retCode\":\"SUCCESS\",\"retMsg\":\"\",\"order\":" order "}"
#define FAIL(msg) "{\"retCode\":\"FAIL\",\"retMsg\":\"" msg "\"}"

static const struct case_ cases[] = {
    /* cc_purchasewithtoken: only a paid order of ours is a success */
    {GW_PURCHASE_TOKEN, 200, OK(ORDER("2")), GW_SUCCESS, NULL},
    {GW_PURCHASE_TOKEN, 200, OK(ORDER("3")), GW_SUCCESS, NULL},
    {GW_PURCHASE_TOKEN, 200, OK(ORDER("\"2\"")), GW_SUCCESS, NULL},
    {GW_PURCHASE_TOKEN, 200, OK(ORDER("1")), GW_UNKNOWN, "status 1"},
    {GW_PURCHASE_TOKEN, 200, OK("{\"payOrderId\":\"P1\"}"), GW_UNKNOWN, "status -1"},
    {GW_PURCHASE_TOKEN, 200, "{\"retCode\":\"SUCCESS\",\"retMsg\":\"\"}", GW_UNKNOWN, "order"},
    {GW_PURCHASE_TOKEN, 200, OK("{\"mchOrderNo\":\"o2\",\"status\":2}"), GW_UNKNOWN, "o2"},
    {GW_PURCHASE_TOKEN, 200,
     OK("{\"payOrderId\":\"" /* 64 characters do not fit an id */
        "0123456789012345678901234567890123456789012345678901234567890123\",\"status\":2}"),
     GW_UNKNOWN, "payOrderId"},
    {GW_PURCHASE_TOKEN, 200, OK("{\"payOrderId\":[1],\"status\":2}"), GW_UNKNOWN, "payOrderId"},
    {GW_PURCHASE_TOKEN, 200, FAIL("card declined"), GW_FAIL, NULL},
    {GW_PURCHASE_TOKEN, 200, FAIL("system busy"), GW_FAIL, NULL},
    /* anything that is not a well-formed answer is unknown */
    {GW_PURCHASE_TOKEN, 502, FAIL("card declined"), GW_UNKNOWN, "HTTP status 502"},
    {GW_PURCHASE_TOKEN, 429, "", GW_UNKNOWN, "HTTP status 429"},
    {GW_PURCHASE_TOKEN, 500, "", GW_UNKNOWN, "HTTP status 500"},
    {GW_PURCHASE_TOKEN, 302, "", GW_UNKNOWN, "HTTP status 302"},
    {GW_PURCHASE_TOKEN, 200, "", GW_UNKNOWN, "empty"},
    {GW_PURCHASE_TOKEN, 200, "<html>Bad gateway</html>", GW_UNKNOWN, "unparseable"},
    {GW_PURCHASE_TOKEN, 200, "{\"retCode\":\"SUCCESS\",\"order\":{\"status\":2", GW_UNKNOWN,
     "unparseable"},
    {GW_PURCHASE_TOKEN, 200, OK(ORDER("2")) "{}", GW_UNKNOWN, "unparseable"},
    {GW_PURCHASE_TOKEN, 200, "[\"SUCCESS\"]", GW_UNKNOWN, "unparseable"},
    {GW_PURCHASE_TOKEN, 200, "{\"retMsg\":\"ok\",\"order\":" ORDER("2") "}", GW_UNKNOWN, "retCode"},
    {GW_PURCHASE_TOKEN, 200, "{\"retCode\":\"PENDING\"}", GW_UNKNOWN, "PENDING"},
    {GW_PURCHASE_TOKEN, 200, "{\"retCode\":\"success\",\"order\":" ORDER("2") "}", GW_UNKNOWN,
     "success"},
    {GW_PURCHASE_TOKEN, 200, "{\"retCode\":0}", GW_UNKNOWN, "retCode"},
    /* cc_query: FAIL proves absence only when it says so */
    {GW_QUERY, 200, FAIL("order not exist"), GW_FAIL, NULL},
    {GW_QUERY, 200, FAIL("Order Not Found"), GW_FAIL, NULL},
    {GW_QUERY, 200, FAIL("system busy"), GW_UNKNOWN, "system busy"},
    {GW_QUERY, 200, FAIL("sign error"), GW_UNKNOWN, "sign error"},
    {GW_QUERY, 200, "{\"retCode\":\"FAIL\"}", GW_UNKNOWN, NULL},
    {GW_QUERY, 200, OK(ORDER("1")), GW_SUCCESS, NULL}, /* status is the caller's */
    {GW_QUERY, 200, OK("{\"mchOrderNo\":\"zz\",\"status\":2}"), GW_UNKNOWN, "zz"},
    {GW_QUERY, 200, "{\"retCode\":\"SUCCESS\"}", GW_UNKNOWN, "order"},
    {GW_QUERY, 503, FAIL("order not exist"), GW_UNKNOWN, "503"},
    /* cc_isbinding: FAIL is "not bound" unless it is a try-later */
    {GW_ISBINDING, 200, "{\"retCode\":\"SUCCESS\",\"retMsg\":\"bound\"}", GW_SUCCESS, NULL},
    {GW_ISBINDING, 200, FAIL("customer not bound"), GW_FAIL, NULL},
    {GW_ISBINDING, 200, FAIL("System Busy, try later"), GW_UNKNOWN, "Busy"},
    {GW_ISBINDING, 200, FAIL("sign error"), GW_UNKNOWN, "sign error"},
    {GW_ISBINDING, 200, "garbage", GW_UNKNOWN, "unparseable"},
    /* hosted pages need their payUrl */
    {GW_PURCHASE, 200, "{\"retCode\":\"SUCCESS\",\"payUrl\":\"http://x/p?token=1\"}", GW_SUCCESS,
     NULL},
    {GW_ADDUSER, 200, "{\"retCode\":\"SUCCESS\",\"retMsg\":\"\"}", GW_UNKNOWN, "payUrl"},
    {GW_ADDUSER, 200, "{\"retCode\":\"SUCCESS\",\"payUrl\":\"\"}", GW_UNKNOWN, "payUrl"},
    {GW_ADDUSER, 200, FAIL("customerId: longer than 30"), GW_FAIL, NULL},
    /* refund and void: a completed order */
    {GW_REFUND, 200, OK(ORDER("2")), GW_SUCCESS, NULL},
    {GW_REFUND, 200, OK(ORDER("0")), GW_UNKNOWN, "status 0"},
    {GW_VOID, 200, OK(ORDER("3")), GW_SUCCESS, NULL},
    {GW_VOID, 200, "{\"retCode\":\"SUCCESS\"}", GW_UNKNOWN, "order"},
    {GW_VOID, 200, FAIL("already voided"), GW_FAIL, NULL},
    /* a refusal that says our number is taken proves an order exists: a
     * restored database sends a number again, and it was maybe paid */
    {GW_PURCHASE_TOKEN, 200, FAIL("duplicate mchOrderNo"), GW_UNKNOWN, "already has"},
    {GW_PURCHASE_TOKEN, 200, FAIL("Order already exists"), GW_UNKNOWN, "already has"},
    {GW_PURCHASE_TOKEN, 200, FAIL("mchOrderNo already used"), GW_UNKNOWN, "already has"},
    {GW_PURCHASE, 200, FAIL("duplicate mchOrderNo"), GW_UNKNOWN, "already has"},
    {GW_REFUND, 200, FAIL("duplicate mchRefundNo"), GW_UNKNOWN, "already has"},
    {GW_VOID, 200, FAIL("duplicate mchRefundNo"), GW_UNKNOWN, "already has"},
    {GW_PURCHASE_TOKEN, 200, FAIL("missing field amount"), GW_FAIL, NULL},
};

static void test_classification_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct case_ *c = &cases[i];
		struct gw_request req = {
		    .call = c->call, .mch_order_no = "o1", .mch_refund_no = "r1", .amount = 100};
		struct gw_result res;
		enum gw_outcome o;

		if (c->call == GW_QUERY)
			req.pay_order_id = NULL;
		o = gw_classify(&req, c->status, c->body, strlen(c->body), &res);
		if (o != c->want || res.outcome != o ||
		    (c->detail && !strstr(res.detail, c->detail)))
			fail_msg("case %zu (%s): got %s \"%s\", want %s \"%s\"", i, c->body,
			         gw_outcome_name(o), res.detail, gw_outcome_name(c->want),
			         c->detail ? c->detail : "");
	}
}

static void test_order_fields(void **state)
{
	const char *body =
	    "{\"retCode\":\"SUCCESS\",\"retMsg\":\"ok\",\"order\":{\"payOrderId\":12345,"
	    "\"mchOrderNo\":\"o1\",\"transid\":\"T9\",\"status\":2,\"paySuccTime\":"
	    "\"2026-01-01 10:00:00\",\"originalOrderId\":\"P0\",\"payType\":\"refund\","
	    "\"amount\":1500}}";
	struct gw_request req = {.call = GW_QUERY, .mch_order_no = "o1"};
	struct gw_result res;

	(void)state;
	assert_int_equal(gw_classify(&req, 200, body, strlen(body), &res), GW_SUCCESS);
	assert_int_equal(res.has_order, 1);
	assert_string_equal(res.order.pay_order_id, "12345"); /* a number, as its digits */
	assert_string_equal(res.order.trans_id, "T9");        /* "transid" accepted */
	assert_string_equal(res.order.pay_succ_time, "2026-01-01 10:00:00");
	assert_string_equal(res.order.original_order_id, "P0");
	assert_string_equal(res.order.pay_type, "refund");
	assert_int_equal(res.order.status, 2);
	assert_int_equal(res.order.amount, 1500);
	assert_string_equal(res.ret_msg, "ok");
	assert_int_equal(res.http_status, 200);

	/* query by payOrderId: an order with another payOrderId is not ours */
	req.mch_order_no = NULL;
	req.pay_order_id = "999";
	assert_int_equal(gw_classify(&req, 200, body, strlen(body), &res), GW_UNKNOWN);
	assert_int_equal(res.order.status, 2);
	req.pay_order_id = "12345";
	assert_int_equal(gw_classify(&req, 200, body, strlen(body), &res), GW_SUCCESS);
}

/* A FAIL's reason: the familiar decline wordings are declines; words we do
 * not know are unfamiliar (a wave of them is not the customers', wave.h). */
static void test_fail_reasons(void **state)
{
	static const struct {
		const char *body;
		enum gw_reason want;
	} fails[] = {
	    {FAIL("card declined"), GW_R_DECLINED},
	    {FAIL("Insufficient funds"), GW_R_DECLINED},
	    {FAIL("Do not honor"), GW_R_DECLINED},
	    {FAIL("system busy"), GW_R_BUSY},
	    {FAIL("mchId error"), GW_R_AUTH},
	    {FAIL("unknown mchId"), GW_R_UNFAMILIAR},
	    {FAIL("account suspended"), GW_R_UNFAMILIAR},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(fails) / sizeof(fails[0]); i++) {
		struct gw_request req = {.call = GW_PURCHASE_TOKEN, .mch_order_no = "o1"};
		struct gw_result res;

		assert_int_equal(gw_classify(&req, 200, fails[i].body, strlen(fails[i].body), &res),
		                 GW_FAIL);
		if (res.reason != fails[i].want)
			fail_msg("%s: reason %s, want %s", fails[i].body,
			         gw_reason_name(res.reason), gw_reason_name(fails[i].want));
	}
}

static void test_ret_msg_one_line(void **state)
{
	const char *body = "{\"retCode\":\"FAIL\",\"retMsg\":\"card\\ndeclined\\r\"}";
	struct gw_request req = {.call = GW_PURCHASE_TOKEN};
	struct gw_result res;

	(void)state;
	assert_int_equal(gw_classify(&req, 200, body, strlen(body), &res), GW_FAIL);
	assert_string_equal(res.ret_msg, "card declined ");
}

/* Whatever bytes the gateway sends, what we keep of its text is valid UTF-8
 * (the database refuses anything else, and with it a whole batch). */
static int valid_utf8(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	while (*p) {
		int n = *p < 0x80 ? 1 : (*p & 0xe0) == 0xc0 ? 2 : (*p & 0xf0) == 0xe0 ? 3 : 4;

		if (*p >= 0x80 && (*p < 0xc2 || *p > 0xf4))
			return 0;
		for (int i = 1; i < n; i++)
			if ((p[i] & 0xc0) != 0x80)
				return 0;
		p += n;
	}
	return 1;
}

static void test_gateway_text_made_utf8(void **state)
{
	const char *latin1 = "{\"retCode\":\"FAIL\",\"retMsg\":\"carte refus\xe9"
	                     "e\"}";
	const char *order = "{\"retCode\":\"SUCCESS\",\"retMsg\":\"ok\",\"order\":{"
	                    "\"payOrderId\":\"P\xff\",\"transId\":\"T\xc3\",\"status\":2}}";
	struct gw_request req = {.call = GW_PURCHASE_TOKEN};
	struct gw_result res;
	char body[600];

	(void)state;
	assert_int_equal(gw_classify(&req, 200, latin1, strlen(latin1), &res), GW_FAIL);
	assert_string_equal(res.ret_msg, "carte refus?e");
	assert_int_equal(gw_classify(&req, 200, order, strlen(order), &res), GW_SUCCESS);
	assert_true(valid_utf8(res.order.pay_order_id) && valid_utf8(res.order.trans_id));
	/* cut to fit: never in the middle of a character */
	snprintf(body, sizeof(body), "{\"retCode\":\"FAIL\",\"retMsg\":\"%0254d\xc3\xa9\"}", 0);
	assert_int_equal(gw_classify(&req, 200, body, strlen(body), &res), GW_FAIL);
	assert_true(valid_utf8(res.ret_msg));
	assert_int_equal(strlen(res.ret_msg), 254);
}

/* A loopback port that refuses connections (bound, not listening) for as
 * long as the socket stays open. */
static int refusing_port(int *fd)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t len = sizeof(a);

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	*fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(*fd >= 0);
	assert_int_equal(bind(*fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(*fd, (struct sockaddr *)&a, &len), 0);
	return ntohs(a.sin_port);
}

static struct gw_client *client_at(int port, int *fd)
{
	struct cfg c;
	char err[256];
	struct gw_client *gw;

	ts_cfg(&c, NULL, NULL);
	snprintf(c.gateway.base_url, sizeof(c.gateway.base_url), "http://127.0.0.1:%d/v2",
	         port ? port : refusing_port(fd));
	gw = gw_client_new(&c.gateway, err, sizeof(err));
	assert_non_null(gw);
	return gw;
}

#define S31 "0123456789012345678901234567890"
#define S30 "012345678901234567890123456789"

struct refusal {
	struct gw_request req;
	const char *detail;
};

static const struct refusal refusals[] = {
    {{.call = GW_PURCHASE_TOKEN, .mch_order_no = S31, .customer_id = "c1", .amount = 100},
     "mchOrderNo: longer than 30 characters"},
    {{.call = GW_PURCHASE_TOKEN, .mch_order_no = "o1", .customer_id = S31, .amount = 100},
     "customerId: longer than 30 characters"},
    {{.call = GW_PURCHASE_TOKEN, .mch_order_no = "o1", .customer_id = "c1", .amount = 0},
     "amount: must be a positive"},
    {{.call = GW_PURCHASE_TOKEN, .mch_order_no = "o1", .customer_id = "c1", .amount = -5},
     "amount: must be a positive"},
    {{.call = GW_PURCHASE_TOKEN, .mch_order_no = "o1", .customer_id = "c1", .amount = 1L << 40},
     "amount: larger than"},
    {{.call = GW_PURCHASE_TOKEN, .customer_id = "c1", .amount = 100}, "mchOrderNo: required"},
    {{.call = GW_PURCHASE_TOKEN, .mch_order_no = "", .customer_id = "c1", .amount = 100},
     "mchOrderNo: required"},
    {{.call = GW_PURCHASE_TOKEN,
      .mch_order_no = "o1",
      .customer_id = "c1",
      .amount = 100,
      .subject = S30 S30 "01234"},
     "subject: longer than 64 characters"},
    {{.call = GW_PURCHASE_TOKEN,
      .mch_order_no = "o1",
      .customer_id = "c1",
      .amount = 100,
      .subject = "bad\nline"},
     "subject: contains a control character"},
    {{.call = GW_PURCHASE_TOKEN,
      .mch_order_no = "o1",
      .customer_id = "c1",
      .amount = 100,
      .body = "caf\xc3"},
     "body: not valid UTF-8"},
    {{.call = GW_PURCHASE,
      .mch_order_no = "o1",
      .customer_id = "c1",
      .amount = 100,
      .return_url = "http://r"},
     "notifyUrl: required"},
    {{.call = GW_ADDUSER, .customer_id = "c1"}, "returnUrl: required"},
    {{.call = GW_REFUND, .mch_refund_no = S31, .pay_order_id = "P1", .amount = 5},
     "mchRefundNo: longer than 30 characters"},
    {{.call = GW_REFUND, .mch_refund_no = "r1", .pay_order_id = "P1"},
     "refundAmount: must be a positive"},
    {{.call = GW_VOID, .mch_refund_no = "r1", .pay_order_id = S31},
     "payOrderId: longer than 30 characters"},
    {{.call = GW_VOID, .mch_refund_no = "r1"}, "payOrderId: required"},
    {{.call = GW_QUERY}, "exactly one of mchOrderNo and payOrderId"},
    {{.call = GW_QUERY, .mch_order_no = "o1", .pay_order_id = "P1"},
     "exactly one of mchOrderNo and payOrderId"},
    {{.call = GW_QUERY, .mch_order_no = S31}, "mchOrderNo: longer than 30 characters"},
    {{.call = GW_QUERY, .mch_order_no = "", .pay_order_id = S31}, /* "" is absent */
     "payOrderId: longer than 30 characters"},
    {{.call = GW_ISBINDING}, "customerId: required"},
    {{.call = (enum gw_call)42}, "call: unknown"},
};

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void test_refused_before_sending(void **state)
{
	int fd;
	struct gw_client *gw = client_at(0, &fd);
	struct gw_result res;
	double t0 = now_s();

	(void)state;
	for (size_t i = 0; i < sizeof(refusals) / sizeof(refusals[0]); i++) {
		enum gw_outcome o = gw_call(gw, &refusals[i].req, &res);

		if (o != GW_INVALID || res.outcome != GW_INVALID ||
		    !strstr(res.detail, refusals[i].detail))
			fail_msg("refusal %zu: got %s \"%s\", want invalid \"%s\"", i,
			         gw_outcome_name(o), res.detail, refusals[i].detail);
		assert_int_equal(res.http_status, 0);
	}
	/* refused without trying the network at all */
	assert_true(now_s() - t0 < 0.5);

	/* the limits themselves are allowed (multi-byte characters count once),
	 * and reach the network: this address refuses connections, so the
	 * outcome of a request that was tried is UNKNOWN */
	{
		struct gw_request ok = {.call = GW_PURCHASE_TOKEN,
		                        .mch_order_no = S30,
		                        .customer_id = S30,
		                        .amount = 2147483647L,
		                        .subject = "\xc3\xa9" S30 S30 "012"};

		assert_int_equal(gw_call(gw, &ok, &res), GW_UNKNOWN);
		assert_non_null(strstr(res.detail, "cannot connect"));
	}
	gw_client_free(gw);
	close(fd);
}

static void never_called(void *udata, const struct gw_result *res)
{
	(void)udata;
	(void)res;
	fail_msg("done called for a refused request");
}

static void test_multi_refusal_queues_nothing(void **state)
{
	int fd;
	struct gw_client *gw = client_at(0, &fd);
	struct gw_multi *m = gw_multi_new(gw, 8);
	struct gw_result res;

	(void)state;
	assert_non_null(m);
	assert_int_equal(gw_multi_submit(m, &refusals[0].req, never_called, NULL, &res),
	                 GW_INVALID);
	assert_non_null(strstr(res.detail, "mchOrderNo"));
	assert_int_equal(gw_multi_pending(m), 0);
	assert_int_equal(gw_multi_run(m, 10), 0);
	gw_multi_free(m);
	gw_client_free(gw);
	close(fd);
}

static void test_client_config_checked(void **state)
{
	struct cfg c;
	char err[256];

	(void)state;
	ts_cfg(&c, NULL, NULL);
	c.gateway.timeout_ms = 0;
	assert_null(gw_client_new(&c.gateway, err, sizeof(err)));
	assert_non_null(strstr(err, "timeout_ms"));
	ts_cfg(&c, NULL, NULL);
	c.gateway.mch_id[0] = '\0';
	assert_null(gw_client_new(&c.gateway, err, sizeof(err)));
	assert_non_null(strstr(err, "mch_id"));
	ts_cfg(&c, NULL, NULL);
	c.gateway.merchant_key[0] = '\0';
	assert_null(gw_client_new(&c.gateway, err, sizeof(err)));
	assert_non_null(strstr(err, "key"));
	ts_cfg(&c, NULL, NULL);
	snprintf(c.gateway.base_url, sizeof(c.gateway.base_url), "ftp://x/v2");
	assert_null(gw_client_new(&c.gateway, err, sizeof(err)));
	assert_non_null(strstr(err, "base_url"));
	/* the key never appears in an error */
	assert_null(strstr(err, TS_KEY));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_classification_table),
	    cmocka_unit_test(test_order_fields),
	    cmocka_unit_test(test_fail_reasons),
	    cmocka_unit_test(test_ret_msg_one_line),
	    cmocka_unit_test(test_gateway_text_made_utf8),
	    cmocka_unit_test(test_refused_before_sending),
	    cmocka_unit_test(test_multi_refusal_queues_nothing),
	    cmocka_unit_test(test_client_config_checked),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
