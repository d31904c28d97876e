/* test_fakegw.c: the fake gateway itself (build/fakegw) over real HTTP with
 * plain libcurl and sign_compute: enrolment and its signed redirect, charges
 * and duplicates, signature checks, the ledger, faults and notify retries. */
#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <pthread.h>
#include <cmocka.h>
#include <curl/curl.h>
#include <microhttpd.h>

#include "sign.h"
#include "support.h"

#define RETURN_URL "http://127.0.0.1:9/iotpay/return"
#define CARD_OK    "card=4501161234567214&expiry=0728"

static struct ts_fakegw gw;

struct body {
	char *p;
	size_t len;
};

static size_t on_body(char *data, size_t size, size_t nmemb, void *udata)
{
	struct body *b = udata;
	char *p = realloc(b->p, b->len + size * nmemb + 1);

	assert_non_null(p);
	memcpy(p + b->len, data, size * nmemb);
	b->p = p;
	b->len += size * nmemb;
	b->p[b->len] = '\0';
	return size * nmemb;
}

/* POSTs body to the API endpoint; returns the HTTP status (0: no answer)
 * and the answer in *resp (malloc'd, may be NULL). */
static long post_raw(const char *endpoint, const char *body, char **resp)
{
	char url[256];
	CURL *h = curl_easy_init();
	struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
	struct body b = {0};
	long code = 0;

	snprintf(url, sizeof(url), "%s/%s", gw.base_url, endpoint);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 5000L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
	if (curl_easy_perform(h) == CURLE_OK)
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
	curl_slist_free_all(hdr);
	curl_easy_cleanup(h);
	*resp = b.p;
	return code;
}

/* The fields of a flat JSON object as strings, for sign_compute/verify. */
static size_t json_kv(const cJSON *o, struct sign_kv *kv, char num[][32], size_t max)
{
	const cJSON *it;
	size_t n = 0;

	cJSON_ArrayForEach(it, o)
	{
		assert_true(n < max);
		kv[n].key = it->string;
		if (cJSON_IsNumber(it)) {
			snprintf(num[n], 32, "%lld", (long long)it->valuedouble);
			kv[n].value = num[n];
		} else {
			kv[n].value = it->valuestring;
		}
		n++;
	}
	return n;
}

/* Signs fields (plus mchId, unless it is there) with key, POSTs them and
 * returns the parsed answer (NULL when there was none or it is not JSON). */
static cJSON *api_key(const char *endpoint, cJSON *fields, const char *key)
{
	struct sign_kv kv[32];
	char num[32][32], sig[33], *body, *resp = NULL;
	cJSON *res;

	if (!cJSON_GetObjectItem(fields, "mchId"))
		cJSON_AddStringToObject(fields, "mchId", TS_MCH_ID);
	sign_compute(kv, json_kv(fields, kv, num, 32), key, sig);
	cJSON_AddStringToObject(fields, "sign", sig);
	body = cJSON_PrintUnformatted(fields);
	cJSON_Delete(fields);
	post_raw(endpoint, body, &resp);
	free(body);
	res = resp ? cJSON_Parse(resp) : NULL;
	free(resp);
	return res;
}

static cJSON *api(const char *endpoint, cJSON *fields)
{
	return api_key(endpoint, fields, TS_KEY);
}

static cJSON *parse(const char *json)
{
	cJSON *j = cJSON_Parse(json);

	assert_non_null(j);
	return j;
}

static const char *str(const cJSON *o, const char *key)
{
	const cJSON *it = cJSON_GetObjectItem(o, key);

	return cJSON_IsString(it) ? it->valuestring : "";
}

static double num(const cJSON *o, const char *key)
{
	const cJSON *it = cJSON_GetObjectItem(o, key);

	return cJSON_IsNumber(it) ? it->valuedouble : -1;
}

static void assert_ret(cJSON *res, const char *code, const char *msg)
{
	assert_non_null(res);
	assert_string_equal(str(res, "retCode"), code);
	if (msg)
		assert_string_equal(str(res, "retMsg"), msg);
}

/* A query string decoded into a flat JSON object of strings. */
static cJSON *query_fields(const char *qs)
{
	cJSON *o = cJSON_CreateObject();
	char *copy = strdup(qs), *save = NULL;

	for (char *p = strtok_r(copy, "&", &save); p; p = strtok_r(NULL, "&", &save)) {
		char *eq = strchr(p, '=');
		char *v;

		assert_non_null(eq);
		*eq = '\0';
		v = curl_easy_unescape(NULL, eq + 1, 0, NULL);
		cJSON_AddStringToObject(o, p, v);
		curl_free(v);
	}
	free(copy);
	return o;
}

/* 1 when the flat object's "sign" matches its other fields. */
static int signed_ok(const cJSON *o)
{
	struct sign_kv kv[32];
	char num[32][32];
	size_t n = json_kv(o, kv, num, 32);

	return sign_verify(kv, n, TS_KEY, str(o, "sign"));
}

/* Follows the hosted page and returns the redirect's fields, checking that
 * the redirect goes to return_url and is signed. */
static cJSON *visit(const char *pay_url, const char *card_query, const char *return_url)
{
	char *loc = ts_fakegw_hosted(pay_url, card_query);
	size_t n = strlen(return_url);
	cJSON *f;

	assert_non_null(loc);
	assert_int_equal(strncmp(loc, return_url, n), 0);
	assert_true(loc[n] == '?' || loc[n] == '&');
	f = query_fields(loc + n + 1);
	free(loc);
	assert_true(signed_ok(f));
	return f;
}

static void enrol(const char *customer, const char *card_query)
{
	cJSON *res, *f;
	cJSON *req = parse("{\"currency\":\"CAD\",\"jobNo\":\"" TS_JOB_NO
	                   "\",\"returnUrl\":\"" RETURN_URL "\"}");
	cJSON_AddStringToObject(req, "customerId", customer);
	res = api("cc_adduser", req);
	assert_ret(res, "SUCCESS", NULL);
	f = visit(str(res, "payUrl"), card_query, RETURN_URL);
	assert_string_equal(str(f, "retCode"), "SUCCESS");
	cJSON_Delete(f);
	cJSON_Delete(res);
}

static cJSON *charge(const char *customer, const char *mch_order_no, long amount)
{
	cJSON *req = parse("{\"currency\":\"CAD\",\"jobNo\":\"" TS_JOB_NO "\"}");

	cJSON_AddStringToObject(req, "customerId", customer);
	cJSON_AddStringToObject(req, "mchOrderNo", mch_order_no);
	cJSON_AddNumberToObject(req, "amount", (double)amount);
	return api("cc_purchasewithtoken", req);
}

static void fault(const char *json)
{
	char *resp = NULL;

	assert_int_equal(ts_fakegw_post(&gw, "faults", json, &resp), 200);
	free(resp);
}

static int setup(void **state)
{
	(void)state;
	assert_int_equal(ts_fakegw_post(&gw, "reset", "{}", NULL), 200);
	return 0;
}

static void test_adduser_hosted_redirect(void **state)
{
	cJSON *res, *f, *ledger, *b;

	(void)state;
	res = api("cc_adduser",
	          parse("{\"customerId\":\"c1\",\"currency\":\"CAD\",\"jobNo\":\"" TS_JOB_NO
	                "\",\"returnUrl\":\"" RETURN_URL "?x=1\"}"));
	assert_ret(res, "SUCCESS", NULL);

	/* The customer gives up first: FAIL, still signed, nothing bound. */
	f = visit(str(res, "payUrl"), CARD_OK "&result=fail", RETURN_URL "?x=1");
	assert_string_equal(str(f, "retCode"), "FAIL");
	assert_string_equal(str(f, "customerId"), "c1");
	cJSON_Delete(f);

	f = visit(str(res, "payUrl"), CARD_OK, RETURN_URL "?x=1");
	assert_string_equal(str(f, "retCode"), "SUCCESS");
	assert_string_equal(str(f, "customerId"), "c1");
	assert_string_equal(str(f, "cardNumber"), "450116XXXXXX7214");
	assert_string_equal(str(f, "expirationDate"), "0728");
	assert_string_equal(str(f, "cardType"), "V");
	cJSON_Delete(f);
	cJSON_Delete(res);

	ledger = ts_fakegw_ledger(&gw);
	b = cJSON_GetArrayItem(cJSON_GetObjectItem(ledger, "bindings"), 0);
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(ledger, "bindings")), 1);
	assert_string_equal(str(b, "customerId"), "c1");
	assert_string_equal(str(b, "cardNumber"), "450116XXXXXX7214");
	cJSON_Delete(ledger);

	res = api("cc_isbinding", parse("{\"customerId\":\"c1\"}"));
	assert_ret(res, "SUCCESS", "bound");
	cJSON_Delete(res);
	assert_int_equal(ts_fakegw_post(&gw, "unbind", "{\"customerId\":\"c1\"}", NULL), 200);
	res = api("cc_isbinding", parse("{\"customerId\":\"c1\"}"));
	assert_ret(res, "FAIL", "customer not bound");
	cJSON_Delete(res);
}

static void test_purchase_with_token_and_duplicates(void **state)
{
	cJSON *res, *again, *ledger, *orders, *reqs;
	char pay_order_id[64];

	(void)state;
	res = charge("c1", "o1", 1500);
	assert_ret(res, "FAIL", "customer not bound");
	cJSON_Delete(res);

	enrol("c1", CARD_OK);
	res = charge("c1", "o1", 1500);
	assert_ret(res, "SUCCESS", NULL);
	assert_int_equal(num(cJSON_GetObjectItem(res, "order"), "status"), 2);
	assert_int_equal(num(cJSON_GetObjectItem(res, "order"), "amount"), 1500);
	snprintf(pay_order_id, sizeof(pay_order_id), "%s",
	         str(cJSON_GetObjectItem(res, "order"), "payOrderId"));
	assert_true(pay_order_id[0]);
	cJSON_Delete(res);

	res = charge("c1", "o1", 1500);
	assert_ret(res, "FAIL", "duplicate mchOrderNo");
	cJSON_Delete(res);

	/* With dup_charge the gateway charges the same mchOrderNo again. */
	fault("{\"endpoint\":\"cc_purchasewithtoken\",\"kind\":\"dup_charge\",\"count\":1}");
	again = charge("c1", "o1", 1500);
	assert_ret(again, "SUCCESS", NULL);
	assert_string_not_equal(str(cJSON_GetObjectItem(again, "order"), "payOrderId"),
	                        pay_order_id);
	cJSON_Delete(again);

	/* cc_query finds the first order of the mchOrderNo. */
	res = api("cc_query", parse("{\"mchOrderNo\":\"o1\"}"));
	assert_ret(res, "SUCCESS", NULL);
	assert_string_equal(str(cJSON_GetObjectItem(res, "order"), "payOrderId"), pay_order_id);
	cJSON_Delete(res);
	res = api("cc_query", parse("{\"mchOrderNo\":\"nope\"}"));
	assert_ret(res, "FAIL", "order not exist");
	cJSON_Delete(res);

	ledger = ts_fakegw_ledger(&gw);
	orders = cJSON_GetObjectItem(ledger, "orders");
	assert_int_equal(cJSON_GetArraySize(orders), 2);
	for (int i = 0; i < 2; i++) {
		assert_string_equal(str(cJSON_GetArrayItem(orders, i), "mchOrderNo"), "o1");
		assert_string_equal(str(cJSON_GetArrayItem(orders, i), "customerId"), "c1");
		assert_string_equal(str(cJSON_GetArrayItem(orders, i), "payType"), "pay");
	}
	reqs = cJSON_GetObjectItem(ledger, "requests");
	assert_int_equal(num(reqs, "cc_purchasewithtoken"), 4);
	assert_int_equal(num(reqs, "cc_query"), 2);
	assert_int_equal(num(reqs, "cc_adduser"), 1);
	cJSON_Delete(ledger);
}

static void test_declines_refunds_voids(void **state)
{
	cJSON *res, *ledger, *first;
	char pay_order_id[64], body[256];

	(void)state;
	enrol("c2", "card=4000000000000002&expiry=0728");
	res = charge("c2", "d1", 500);
	assert_ret(res, "FAIL", "card declined");
	cJSON_Delete(res);

	enrol("c1", CARD_OK);
	assert_int_equal(
	    ts_fakegw_post(&gw, "decline", "{\"customerId\":\"c1\",\"count\":1}", NULL), 200);
	res = charge("c1", "o1", 1000);
	assert_ret(res, "FAIL", "card declined");
	cJSON_Delete(res);
	res = charge("c1", "o1", 1000); /* a decline keeps no order: o1 is free */
	assert_ret(res, "SUCCESS", NULL);
	snprintf(pay_order_id, sizeof(pay_order_id), "%s",
	         str(cJSON_GetObjectItem(res, "order"), "payOrderId"));
	cJSON_Delete(res);

	snprintf(body, sizeof(body),
	         "{\"payOrderId\":\"%s\",\"mchRefundNo\":\"r1\",\"refundAmount\":400,"
	         "\"currency\":\"CAD\",\"loginName\":\"" TS_JOB_NO "\"}",
	         pay_order_id);
	res = api("cc_refund", parse(body));
	assert_ret(res, "SUCCESS", NULL);
	assert_string_equal(str(cJSON_GetObjectItem(res, "order"), "payType"), "refund");
	assert_string_equal(str(cJSON_GetObjectItem(res, "order"), "originalOrderId"),
	                    pay_order_id);
	cJSON_Delete(res);
	res = api("cc_refund", parse(body));
	assert_ret(res, "FAIL", "duplicate mchRefundNo");
	cJSON_Delete(res);
	snprintf(body, sizeof(body),
	         "{\"payOrderId\":\"%s\",\"mchRefundNo\":\"r2\",\"refundAmount\":601,"
	         "\"currency\":\"CAD\",\"loginName\":\"" TS_JOB_NO "\"}",
	         pay_order_id);
	res = api("cc_refund", parse(body));
	assert_ret(res, "FAIL", NULL); /* 400 + 601 > 1000 */
	cJSON_Delete(res);
	snprintf(body, sizeof(body),
	         "{\"payOrderId\":\"%s\",\"mchRefundNo\":\"v1\",\"currency\":\"CAD\","
	         "\"loginName\":\"" TS_JOB_NO "\"}",
	         pay_order_id);
	res = api("cc_void", parse(body));
	assert_ret(res, "FAIL", NULL); /* partly refunded: no void */
	cJSON_Delete(res);

	ledger = ts_fakegw_ledger(&gw);
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(ledger, "orders")), 2);
	first = cJSON_GetArrayItem(cJSON_GetObjectItem(ledger, "orders"), 0);
	assert_string_equal(str(first, "payOrderId"), pay_order_id);
	assert_int_equal(num(first, "refunded"), 400);
	assert_false(cJSON_IsTrue(cJSON_GetObjectItem(first, "voided")));
	cJSON_Delete(ledger);

	res = charge("c1", "o2", 700);
	snprintf(body, sizeof(body),
	         "{\"payOrderId\":\"%s\",\"mchRefundNo\":\"v2\",\"currency\":\"CAD\","
	         "\"loginName\":\"" TS_JOB_NO "\"}",
	         str(cJSON_GetObjectItem(res, "order"), "payOrderId"));
	cJSON_Delete(res);
	res = api("cc_void", parse(body));
	assert_ret(res, "SUCCESS", NULL);
	assert_int_equal(num(cJSON_GetObjectItem(res, "order"), "amount"), 700);
	assert_string_equal(str(cJSON_GetObjectItem(res, "order"), "payType"), "void");
	cJSON_Delete(res);
}

static void test_bad_requests_refused(void **state)
{
	cJSON *res, *ledger;
	char *resp = NULL;

	(void)state;
	enrol("c1", CARD_OK);
	res = api_key("cc_purchasewithtoken",
	              parse("{\"customerId\":\"c1\",\"mchOrderNo\":\"o1\",\"amount\":100,"
	                    "\"currency\":\"CAD\",\"jobNo\":\"" TS_JOB_NO "\"}"),
	              "WRONGKEY");
	assert_ret(res, "FAIL", "sign error");
	cJSON_Delete(res);
	res = api("cc_purchasewithtoken",
	          parse("{\"mchId\":\"999\",\"customerId\":\"c1\",\"mchOrderNo\":\"o1\","
	                "\"amount\":100,\"currency\":\"CAD\",\"jobNo\":\"" TS_JOB_NO "\"}"));
	assert_ret(res, "FAIL", "mchId error");
	cJSON_Delete(res);
	res = api("cc_purchasewithtoken",
	          parse("{\"customerId\":\"c1\",\"mchOrderNo\":\"o1\",\"amount\":100,"
	                "\"currency\":\"USD\",\"jobNo\":\"" TS_JOB_NO "\"}"));
	assert_ret(res, "FAIL", "field currency must be CAD");
	cJSON_Delete(res);
	res = api("cc_purchasewithtoken",
	          parse("{\"customerId\":\"c1\",\"mchOrderNo\":\"o1\",\"amount\":0,"
	                "\"currency\":\"CAD\",\"jobNo\":\"" TS_JOB_NO "\"}"));
	assert_ret(res, "FAIL", "field amount must be a positive integer");
	cJSON_Delete(res);
	res =
	    api("cc_purchasewithtoken",
	        parse("{\"customerId\":\"c1\",\"mchOrderNo\":\"o1234567890123456789012345678901\","
	              "\"amount\":100,\"currency\":\"CAD\",\"jobNo\":\"" TS_JOB_NO "\"}"));
	assert_ret(res, "FAIL", "field mchOrderNo too long (max 30)");
	cJSON_Delete(res);
	res = api("cc_purchasewithtoken", parse("{\"customerId\":\"c1\",\"mchOrderNo\":\"o1\","
	                                        "\"amount\":100,\"currency\":\"CAD\"}"));
	assert_ret(res, "FAIL", "missing field jobNo");
	cJSON_Delete(res);
	assert_int_equal(post_raw("cc_query", "not json", &resp), 200);
	res = parse(resp);
	free(resp);
	assert_ret(res, "FAIL", "invalid json");
	cJSON_Delete(res);

	ledger = ts_fakegw_ledger(&gw);
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(ledger, "orders")), 0);
	cJSON_Delete(ledger);
}

static void test_faults(void **state)
{
	const char *q = "{\"mchId\":\"" TS_MCH_ID "\",\"payOrderId\":\"x\"}";
	char *resp = NULL;
	cJSON *res, *ledger;
	struct timespec t0, t1;

	(void)state;
	enrol("c1", CARD_OK);
	fault("{\"endpoint\":\"*\",\"kind\":\"drop_before\",\"count\":1}");
	assert_int_equal(post_raw("cc_query", q, &resp), 0);
	free(resp);
	assert_int_equal(post_raw("cc_query", q, &resp), 200);
	free(resp);

	fault("{\"endpoint\":\"cc_query\",\"kind\":\"http429\",\"count\":1}");
	assert_int_equal(post_raw("cc_query", q, &resp), 429);
	free(resp);
	fault("{\"endpoint\":\"cc_query\",\"kind\":\"busy\",\"count\":1}");
	assert_int_equal(post_raw("cc_query", q, &resp), 200);
	res = parse(resp);
	free(resp);
	assert_ret(res, "FAIL", "system busy");
	cJSON_Delete(res);

	/* Faults after processing: the charges happened though no answer says so. */
	fault("{\"endpoint\":\"cc_purchasewithtoken\",\"kind\":\"drop_after\",\"count\":1}");
	assert_null(charge("c1", "f1", 100));
	fault("{\"endpoint\":\"cc_purchasewithtoken\",\"kind\":\"http5xx\",\"count\":1}");
	assert_null(charge("c1", "f2", 100));
	fault("{\"endpoint\":\"cc_purchasewithtoken\",\"kind\":\"garbage\",\"count\":1}");
	assert_null(charge("c1", "f3", 100));
	fault("{\"endpoint\":\"cc_purchasewithtoken\",\"kind\":\"hang_after\",\"count\":1,"
	      "\"ms\":300}");
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_null(charge("c1", "f4", 100));
	clock_gettime(CLOCK_MONOTONIC, &t1);
	assert_true((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000 >= 290);
	fault("{\"endpoint\":\"cc_purchasewithtoken\",\"kind\":\"latency\",\"count\":1,"
	      "\"ms\":200}");
	clock_gettime(CLOCK_MONOTONIC, &t0);
	res = charge("c1", "f5", 100);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	assert_ret(res, "SUCCESS", NULL);
	cJSON_Delete(res);
	assert_true((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000 >= 190);

	ledger = ts_fakegw_ledger(&gw);
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(ledger, "orders")), 5);
	cJSON_Delete(ledger);

	/* A rate of 1 hits every request until cleared. */
	fault("{\"endpoint\":\"cc_isbinding\",\"kind\":\"http429\",\"rate\":1}");
	for (int i = 0; i < 3; i++) {
		assert_int_equal(post_raw("cc_isbinding", q, &resp), 429);
		free(resp);
	}
	fault("{\"clear\":true}");
	assert_int_equal(post_raw("cc_isbinding", q, &resp), 200);
	free(resp);
}

/* A notify receiver that answers FAIL to the first POST, then SUCCESS. */
struct receiver {
	pthread_mutex_t mu;
	int posts;
	char body[2048];
};

static enum MHD_Result on_notify(void *cls, struct MHD_Connection *c, const char *url,
                                 const char *method, const char *version, const char *upload,
                                 size_t *upload_size, void **con_cls)
{
	struct receiver *r = cls;
	static const char fail_body[] = "FAIL", ok_body[] = "SUCCESS";
	struct MHD_Response *resp;
	enum MHD_Result ret;
	int n;

	(void)url;
	(void)method;
	(void)version;
	if (!*con_cls) {
		*con_cls = r;
		pthread_mutex_lock(&r->mu);
		r->body[0] = '\0';
		pthread_mutex_unlock(&r->mu);
		return MHD_YES;
	}
	pthread_mutex_lock(&r->mu);
	if (*upload_size) {
		strncat(r->body, upload,
		        *upload_size < sizeof(r->body) - strlen(r->body) - 1
		            ? *upload_size
		            : sizeof(r->body) - strlen(r->body) - 1);
		pthread_mutex_unlock(&r->mu);
		*upload_size = 0;
		return MHD_YES;
	}
	n = ++r->posts;
	pthread_mutex_unlock(&r->mu);
	resp = n == 1
	           ? MHD_create_response_from_buffer(4, (void *)fail_body, MHD_RESPMEM_PERSISTENT)
	           : MHD_create_response_from_buffer(7, (void *)ok_body, MHD_RESPMEM_PERSISTENT);
	ret = MHD_queue_response(c, 200, resp);
	MHD_destroy_response(resp);
	return ret;
}

static void test_purchase_notify_retried(void **state)
{
	struct receiver r = {.mu = PTHREAD_MUTEX_INITIALIZER};
	struct MHD_Daemon *d;
	char req[512];
	cJSON *res, *f, *note, *ledger, *n;
	int port, posts = 0;

	(void)state;
	d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, on_notify, &r,
	                     MHD_OPTION_END);
	assert_non_null(d);
	port = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT)->port;
	snprintf(
	    req, sizeof(req),
	    "{\"customerId\":\"c9\",\"mchOrderNo\":\"p1\",\"amount\":2500,\"currency\":\"CAD\","
	    "\"jobNo\":\"" TS_JOB_NO "\",\"notifyUrl\":\"http://127.0.0.1:%d/notify\","
	    "\"returnUrl\":\"" RETURN_URL "\"}",
	    port);
	res = api("cc_purchase", parse(req));
	assert_ret(res, "SUCCESS", NULL);
	f = visit(str(res, "payUrl"), CARD_OK, RETURN_URL);
	cJSON_Delete(res);
	assert_string_equal(str(f, "retCode"), "SUCCESS");
	assert_string_equal(str(f, "mchOrderNo"), "p1");
	assert_string_equal(str(f, "status"), "2");
	assert_true(str(f, "payOrderId")[0]);

	for (int i = 0; i < 100 && posts < 2; i++) {
		usleep(50 * 1000);
		pthread_mutex_lock(&r.mu);
		posts = r.posts;
		pthread_mutex_unlock(&r.mu);
	}
	assert_int_equal(posts, 2);
	pthread_mutex_lock(&r.mu);
	note = parse(r.body);
	pthread_mutex_unlock(&r.mu);
	assert_true(signed_ok(note));
	assert_string_equal(str(note, "payOrderId"), str(f, "payOrderId"));
	assert_string_equal(str(note, "mchId"), TS_MCH_ID);
	assert_int_equal(num(note, "amount"), 2500);
	assert_int_equal(num(note, "status"), 2);
	assert_string_equal(str(note, "cardNum"), "450116XXXXXX7214");
	cJSON_Delete(note);
	cJSON_Delete(f);

	/* Delivered: no third POST, and the ledger says so. */
	usleep(300 * 1000);
	pthread_mutex_lock(&r.mu);
	assert_int_equal(r.posts, 2);
	pthread_mutex_unlock(&r.mu);
	ledger = ts_fakegw_ledger(&gw);
	n = cJSON_GetArrayItem(cJSON_GetObjectItem(ledger, "notifies"), 0);
	assert_string_equal(str(n, "mchOrderNo"), "p1");
	assert_int_equal(num(n, "attempts"), 2);
	assert_true(cJSON_IsTrue(cJSON_GetObjectItem(n, "delivered")));
	cJSON_Delete(ledger);
	MHD_stop_daemon(d);
}

static int group_setup(void **state)
{
	(void)state;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	ts_fakegw_start(&gw, "--seed 7");
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	ts_fakegw_stop(&gw);
	curl_global_cleanup();
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup(test_adduser_hosted_redirect, setup),
	    cmocka_unit_test_setup(test_purchase_with_token_and_duplicates, setup),
	    cmocka_unit_test_setup(test_declines_refunds_voids, setup),
	    cmocka_unit_test_setup(test_bad_requests_refused, setup),
	    cmocka_unit_test_setup(test_faults, setup),
	    cmocka_unit_test_setup(test_purchase_notify_retried, setup),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
