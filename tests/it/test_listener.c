/* test_listener.c: billingd's HTTP listener over real HTTP (libcurl) with a
 * real database and the fake gateway: the signed callbacks (accepted,
 * rejected, replayed), enrolment end to end, size and method limits, 1,000
 * concurrent requests, /healthz and /metrics (checked line by line against
 * the Prometheus text format). */
#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <cmocka.h>
#include <curl/curl.h>

#include "customers.h"
#include "db.h"
#include "gateway.h"
#include "listener.h"
#include "admin.h"
#include "metrics.h"
#include "sign.h"
#include "support.h"

#define T_NOW 1907712000 /* 2030-06-15T00:00:00Z: the metrics test's clock */

static struct ts_fakegw fake;
static char db_url[512];
static PGconn *db;
static struct cfg cfg; /* the listener's: return_url points at it */
static struct listener *lst;
static struct admin *adm; /* on cfg's admin address */

static int64_t test_clock(void)
{
	return T_NOW;
}

/* ---- database helpers ---- */

static void sql(PGconn *c, const char *q, int n, ...)
{
	const char *p[8];
	char err[512];
	va_list ap;
	int i;

	va_start(ap, n);
	for (i = 0; i < n; i++)
		p[i] = va_arg(ap, const char *);
	va_end(ap);
	if (db_exec(c, q, n, p, err, sizeof(err)) < 0)
		fail_msg("%s: %s", q, err);
}

/* First column of the first row of a query with one parameter (or none
 * when param is NULL), as text. */
static const char *one(const char *q, const char *param)
{
	static char out[256];
	const char *p[1] = {param};
	char err[512];
	PGresult *r = db_query(db, q, param ? 1 : 0, p, err, sizeof(err));

	if (!r)
		fail_msg("%s: %s", q, err);
	snprintf(out, sizeof(out), "%s", PQntuples(r) ? db_str(r, 0, 0) : "(none)");
	PQclear(r);
	return out;
}

static long audit_rows(const char *entity_id)
{
	return atol(one("SELECT count(*) FROM audit_log WHERE entity_id = $1", entity_id));
}

static const char *customer_state(const char *id)
{
	return one("SELECT state FROM customers WHERE customer_id = $1", id);
}

/* ---- HTTP ---- */

struct resp {
	long status;
	char *body;
	size_t len;
	char location[1024];
	char allow[64];
};

static size_t on_body(char *data, size_t size, size_t nmemb, void *udata)
{
	struct resp *r = udata;
	char *p = realloc(r->body, r->len + size * nmemb + 1);

	if (!p)
		return 0;
	memcpy(p + r->len, data, size * nmemb);
	r->body = p;
	r->len += size * nmemb;
	p[r->len] = '\0';
	return size * nmemb;
}

struct upload {
	const char *data;
	size_t len, at;
};

static size_t on_read(char *buf, size_t size, size_t nmemb, void *udata)
{
	struct upload *u = udata;
	size_t n = size * nmemb < u->len - u->at ? size * nmemb : u->len - u->at;

	memcpy(buf, u->data + u->at, n);
	u->at += n;
	return n;
}

static CURL *easy(const char *url, struct resp *r)
{
	CURL *h = curl_easy_init();

	assert_non_null(h);
	memset(r, 0, sizeof(*r));
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 60000L);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
	return h;
}

static void finish(CURL *h, CURLcode rc, struct resp *r)
{
	struct curl_header *hd;

	if (rc == CURLE_OK)
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
	if (curl_easy_header(h, "Location", 0, CURLH_HEADER, -1, &hd) == CURLHE_OK)
		snprintf(r->location, sizeof(r->location), "%s", hd->value);
	if (curl_easy_header(h, "Allow", 0, CURLH_HEADER, -1, &hd) == CURLHE_OK)
		snprintf(r->allow, sizeof(r->allow), "%s", hd->value);
	if (!r->body)
		r->body = strdup("");
}

/* method "GET"/"POST"/...; a POST body of len bytes, sent chunked (no
 * Content-Length) when chunked. url is absolute or a path on the listener. */
static void request(const char *method, const char *url, const char *body, size_t len, int chunked,
                    struct resp *r)
{
	char full[8192];
	struct upload u = {body, len, 0};
	struct curl_slist *hdr = NULL;
	CURL *h;

	if (url[0] == '/')
		snprintf(full, sizeof(full), "http://127.0.0.1:%d%s", listener_port(lst), url);
	else
		snprintf(full, sizeof(full), "%s", url);
	h = easy(full, r);
	if (strcmp(method, "POST") == 0 && chunked) {
		hdr = curl_slist_append(hdr, "Transfer-Encoding: chunked");
		curl_easy_setopt(h, CURLOPT_POST, 1L);
		curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(h, CURLOPT_READDATA, &u);
	} else if (strcmp(method, "POST") == 0) {
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
	} else if (strcmp(method, "GET") != 0) {
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	}
	hdr = curl_slist_append(hdr, "Content-Type: application/json");
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
	finish(h, curl_easy_perform(h), r);
	curl_slist_free_all(hdr);
	curl_easy_cleanup(h);
}

static void get(const char *url, struct resp *r)
{
	request("GET", url, NULL, 0, 0, r);
}

/* A path on the admin address (static buffer). */
static const char *admin_url(const char *path)
{
	static char url[256];

	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", admin_port(adm), path);
	return url;
}

static void post(const char *url, const char *body, struct resp *r)
{
	request("POST", url, body, strlen(body), 0, r);
}

/* ---- signed messages as the gateway sends them ---- */

struct msg {
	int n;
	struct sign_kv kv[24];
	char sign[33];
};

/* Fields from "k", "v", ... NULL; signed with key unless key is NULL. */
static void msg_make(struct msg *m, const char *key, ...)
{
	va_list ap;
	const char *k;

	memset(m, 0, sizeof(*m));
	va_start(ap, key);
	while ((k = va_arg(ap, const char *)) != NULL) {
		m->kv[m->n].key = k;
		m->kv[m->n++].value = va_arg(ap, const char *);
	}
	va_end(ap);
	if (key)
		sign_compute(m->kv, (size_t)m->n, key, m->sign);
}

/* "/iotpay/return?k=v&...&sign=S" leaving out field drop (may be NULL). */
static const char *msg_return_path(const struct msg *m, const char *drop)
{
	static char out[4096];
	size_t at = (size_t)snprintf(out, sizeof(out), "/iotpay/return?");
	int i;

	for (i = 0; i < m->n; i++) {
		char *v;

		if (drop && strcmp(m->kv[i].key, drop) == 0)
			continue;
		v = curl_easy_escape(NULL, m->kv[i].value, 0);
		at += (size_t)snprintf(out + at, sizeof(out) - at, "%s%s=%s", i ? "&" : "",
		                       m->kv[i].key, v);
		curl_free(v);
	}
	if (m->sign[0])
		snprintf(out + at, sizeof(out) - at, "&sign=%s", m->sign);
	return out;
}

/* The notify JSON (amount and status as numbers, as the gateway sends). */
static char *msg_json(const struct msg *m, const char *drop)
{
	cJSON *o = cJSON_CreateObject();
	char *s;
	int i;

	for (i = 0; i < m->n; i++) {
		if (drop && strcmp(m->kv[i].key, drop) == 0)
			continue;
		if (strcmp(m->kv[i].key, "amount") == 0 || strcmp(m->kv[i].key, "status") == 0)
			cJSON_AddNumberToObject(o, m->kv[i].key, atof(m->kv[i].value));
		else
			cJSON_AddStringToObject(o, m->kv[i].key, m->kv[i].value);
	}
	if (m->sign[0])
		cJSON_AddStringToObject(o, "sign", m->sign);
	s = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	return s;
}

static void return_success(struct msg *m, const char *key, const char *id)
{
	msg_make(m, key, "retCode", "SUCCESS", "customerId", id, "cardNumber", "450116XXXXXX7214",
	         "expirationDate", "0728", "cardType", "V", (char *)NULL);
}

static void notify_msg(struct msg *m, const char *key, const char *mch_id, const char *order,
                       const char *pay_order_id, const char *amount)
{
	msg_make(m, key, "payOrderId", pay_order_id, "mchId", mch_id, "mchOrderNo", order,
	         "transId", "T-BANK-1", "currency", "CAD", "amount", amount, "status", "2",
	         "paySuccTime", "2030-06-15 10:00:00", "cardType", "V", "cardNum",
	         "450116XXXXXX7214", "expirationDate", "0728", (char *)NULL);
}

/* ---- fixtures ---- */

/* Starts a listener on an ephemeral port whose return_url (with query, which
 * may be "") points at itself: started once to learn the port, then again on
 * that port with the return_url the gateway will redirect to. */
static struct listener *start_at_self(struct cfg *c, const char *query)
{
	char err[256];
	struct listener *l = listener_start(c, NULL, err, sizeof(err));
	int port;

	assert_non_null(l);
	port = listener_port(l);
	assert_true(port > 0);
	listener_stop(l);
	snprintf(c->listen_address, sizeof(c->listen_address), "127.0.0.1:%d", port);
	snprintf(c->return_url, sizeof(c->return_url), "http://127.0.0.1:%d/iotpay/return%s", port,
	         query);
	l = listener_start(c, NULL, err, sizeof(err));
	if (!l)
		fail_msg("listener_start: %s", err);
	assert_int_equal(listener_port(l), port);
	return l;
}

static int setup(void **state)
{
	char err[256];

	(void)state;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	ts_fakegw_start(&fake, NULL);
	snprintf(db_url, sizeof(db_url), "%s", ts_db_new("listener"));
	db = ts_db_connect(db_url);
	ts_cfg(&cfg, db_url, &fake);
	lst = start_at_self(&cfg, "");
	adm = admin_start(&cfg, NULL, err, sizeof(err));
	if (!adm)
		fail_msg("admin_start: %s", err);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	admin_stop(adm);
	listener_stop(lst);
	PQfinish(db);
	ts_fakegw_stop(&fake);
	curl_global_cleanup();
	return 0;
}

/* A pending enrolment whose token is "tok-<id>". */
static void new_customer(const char *id)
{
	sql(db,
	    "INSERT INTO customers (customer_id, email, enrol_token) "
	    "VALUES ($1::text, 'x@example.com', 'tok-' || $1::text)",
	    1, id);
}

/* A one-off charge awaiting its payment; returns nothing, keyed by order. */
static void new_charge(const char *customer, const char *order, const char *cents)
{
	sql(db,
	    "INSERT INTO charges (mch_order_no, kind, customer_id, amount_cents) "
	    "VALUES ($1, 'one_off', $2, $3::bigint)",
	    3, order, customer, cents);
}

/* The enrolment's token in the URL the gateway returns to (our returnUrl's
 * own pair, unsigned): customer id's current one. */
static const char *return_with_token(const char *path, const char *id)
{
	static char out[8192];

	if (snprintf(out, sizeof(out), "%s&enrolment=%s", path,
	             one("SELECT coalesce(enrol_token, 'none') FROM customers "
	                 "WHERE customer_id = $1",
	                 id)) >= (int)sizeof(out))
		fail_msg("return path too long");
	return out;
}

/* ---- GET /iotpay/return ---- */

static void test_return_success_binds_and_replay_changes_nothing(void **state)
{
	struct msg m;
	struct resp r;
	long audits;
	char updated[64], path[8192];

	(void)state;
	new_customer("ret_ok");
	return_success(&m, TS_KEY, "ret_ok");
	snprintf(path, sizeof(path), "%s", return_with_token(msg_return_path(&m, NULL), "ret_ok"));
	get(path, &r);
	assert_int_equal(r.status, 302);
	assert_string_equal(r.location, cfg.success_url);
	free(r.body);
	assert_string_equal(customer_state("ret_ok"), "bound");
	assert_string_equal(one("SELECT card_masked || ' ' || card_type || ' ' || card_expiry "
	                        "FROM customers WHERE customer_id = $1",
	                        "ret_ok"),
	                    "450116XXXXXX7214 V 0728");
	audits = audit_rows("ret_ok");
	assert_int_equal(audits, 2); /* inserted, bound */
	snprintf(updated, sizeof(updated), "%s",
	         one("SELECT updated_at FROM customers WHERE customer_id = $1", "ret_ok"));

	get(path, &r); /* the replay */
	assert_int_equal(r.status, 302);
	assert_string_equal(r.location, cfg.success_url);
	free(r.body);
	assert_int_equal(audit_rows("ret_ok"), audits);
	assert_string_equal(
	    one("SELECT updated_at FROM customers WHERE customer_id = $1", "ret_ok"), updated);
}

/* With no success_url or failure_url configured (the default), the customer
 * still gets an answer: a page that says what happened. */
static void test_return_without_landing_urls(void **state)
{
	struct cfg bare = cfg;
	struct msg m;
	struct resp r;

	(void)state;
	bare.success_url[0] = '\0';
	bare.failure_url[0] = '\0';
	listener_reload(lst, &bare);
	new_customer("ret_bare");
	return_success(&m, TS_KEY, "ret_bare");
	get(return_with_token(msg_return_path(&m, NULL), "ret_bare"), &r);
	listener_reload(lst, &cfg);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.location, "");
	assert_non_null(strstr(r.body, "card is saved"));
	free(r.body);
	assert_string_equal(customer_state("ret_bare"), "bound");
}

static void test_return_fail_marks_failed_never_unbinds(void **state)
{
	struct msg m;
	struct resp r;
	long audits;
	char path[8192];

	(void)state;
	new_customer("ret_fail");
	msg_make(&m, TS_KEY, "retCode", "FAIL", "customerId", "ret_fail", (char *)NULL);
	snprintf(path, sizeof(path), "%s",
	         return_with_token(msg_return_path(&m, NULL), "ret_fail"));
	get(path, &r);
	assert_int_equal(r.status, 302);
	assert_string_equal(r.location, cfg.failure_url);
	free(r.body);
	assert_string_equal(customer_state("ret_fail"), "failed");
	audits = audit_rows("ret_fail");
	get(path, &r);
	assert_int_equal(r.status, 302);
	assert_string_equal(r.location, cfg.failure_url);
	free(r.body);
	assert_int_equal(audit_rows("ret_fail"), audits);

	/* A stale FAIL after the card was bound leaves the binding alone. */
	new_customer("ret_stale");
	return_success(&m, TS_KEY, "ret_stale");
	get(return_with_token(msg_return_path(&m, NULL), "ret_stale"), &r);
	assert_int_equal(r.status, 302);
	free(r.body);
	audits = audit_rows("ret_stale");
	msg_make(&m, TS_KEY, "retCode", "FAIL", "customerId", "ret_stale", (char *)NULL);
	snprintf(path, sizeof(path), "%s", msg_return_path(&m, NULL));
	get(return_with_token(path, "ret_stale"), &r);
	assert_int_equal(r.status, 302);
	assert_string_equal(r.location, cfg.failure_url);
	free(r.body);
	assert_string_equal(customer_state("ret_stale"), "bound");
	assert_int_equal(audit_rows("ret_stale"), audits);
}

/* An old signed return, kept by anyone who saw it (a browser history, a
 * proxy log), replayed later: it neither binds the customer again once the
 * binding was undone nor puts back the card of an earlier enrolment. */
static void test_return_replay_never_rebinds_or_moves_card_back(void **state)
{
	char err[256], pay_url[1024], *loc, old[8192];
	struct gw_client *gw = gw_client_new(&cfg.gateway, err, sizeof(err));
	struct resp r;

	(void)state;
	assert_non_null(gw);
	/* first enrolment, card ...7214; its return URL is kept */
	assert_int_equal(customers_enrol(db, gw, &cfg, "rp_1", NULL, NULL, (int64_t)time(NULL),
	                                 pay_url, sizeof(pay_url), err, sizeof(err)),
	                 0);
	loc = ts_fakegw_hosted(pay_url, "card=4501161234567214&expiry=0728");
	assert_non_null(loc);
	snprintf(old, sizeof(old), "%s", strstr(loc, "/iotpay/return"));
	free(loc);
	get(old, &r);
	assert_int_equal(r.status, 302);
	free(r.body);
	assert_string_equal(customer_state("rp_1"), "bound");

	/* the binding is undone: a replay does not bind again */
	sql(db, "UPDATE customers SET state = 'unbound' WHERE customer_id = $1", 1, "rp_1");
	get(old, &r);
	free(r.body);
	assert_string_equal(customer_state("rp_1"), "unbound");

	/* re-enrolled with card ...0004: the old return does not roll it back,
	 * neither while the new enrolment is pending nor after */
	assert_int_equal(customers_enrol(db, gw, &cfg, "rp_1", NULL, NULL, (int64_t)time(NULL),
	                                 pay_url, sizeof(pay_url), err, sizeof(err)),
	                 0);
	get(old, &r);
	free(r.body);
	assert_string_equal(customer_state("rp_1"), "pending");
	loc = ts_fakegw_hosted(pay_url, "card=5500001234560004&expiry=1129");
	assert_non_null(loc);
	get(strstr(loc, "/iotpay/return"), &r);
	free(r.body);
	free(loc);
	assert_string_equal(customer_state("rp_1"), "bound");
	get(old, &r);
	free(r.body);
	assert_string_equal(
	    one("SELECT card_masked || ' ' || card_expiry FROM customers WHERE customer_id = $1",
	        "rp_1"),
	    "550000XXXXXX0004 1129");
	gw_client_free(gw);
}

static void expect_return_status(const char *path, long status)
{
	struct resp r;

	get(path, &r);
	assert_int_equal(r.status, status);
	assert_string_equal(r.location, "");
	free(r.body);
}

static void test_return_rejects_forged_truncated_unsigned(void **state)
{
	char path[4096];
	struct msg m;
	long audits;

	(void)state;
	new_customer("ret_bad");
	audits = audit_rows("ret_bad");

	return_success(&m, "WRONGKEY0123456789abcdef", "ret_bad"); /* forged */
	expect_return_status(msg_return_path(&m, NULL), 403);
	return_success(&m, TS_KEY, "ret_bad"); /* truncated: a signed field left out */
	expect_return_status(msg_return_path(&m, "cardType"), 403);
	expect_return_status(msg_return_path(&m, "expirationDate"), 403);
	return_success(&m, NULL, "ret_bad"); /* unsigned */
	expect_return_status(msg_return_path(&m, NULL), 403);
	return_success(&m, TS_KEY, "ret_bad"); /* altered after signing */
	snprintf(path, sizeof(path), "%s", msg_return_path(&m, NULL));
	memcpy(strstr(path, "7214"), "7215", 4);
	expect_return_status(path, 403);
	/* another customer's id put in front of a genuine message */
	snprintf(path, sizeof(path), "/iotpay/return?customerId=ret_other&%s",
	         msg_return_path(&m, NULL) + strlen("/iotpay/return?"));
	expect_return_status(path, 400);
	expect_return_status("/iotpay/return", 400);
	/* signed, but an unmasked card number is never stored */
	msg_make(&m, TS_KEY, "retCode", "SUCCESS", "customerId", "ret_bad", "cardNumber",
	         "4501161234567214", "expirationDate", "0728", "cardType", "V", (char *)NULL);
	expect_return_status(msg_return_path(&m, NULL), 400);
	/* signed, but not ours: an unknown customer is not created */
	return_success(&m, TS_KEY, "ret_nobody");
	expect_return_status(msg_return_path(&m, NULL), 404);
	assert_string_equal(customer_state("ret_nobody"), "(none)");

	assert_string_equal(customer_state("ret_bad"), "pending");
	assert_string_equal(one("SELECT coalesce(card_masked, '-') FROM customers "
	                        "WHERE customer_id = $1",
	                        "ret_bad"),
	                    "-");
	assert_int_equal(audit_rows("ret_bad"), audits);
}

/* ---- POST /iotpay/notify ---- */

static void expect_notify(const char *body, const char *answer)
{
	struct resp r;

	post("/iotpay/notify", body, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, answer);
	free(r.body);
}

static void test_notify_records_once(void **state)
{
	struct msg m;
	char *body;
	long audits;

	(void)state;
	new_customer("nt_ok");
	new_charge("nt_ok", "T-nt-1", "1500");
	notify_msg(&m, TS_KEY, TS_MCH_ID, "T-nt-1", "PO-1001", "1500");
	body = msg_json(&m, NULL);
	expect_notify(body, "SUCCESS");
	assert_string_equal(one("SELECT state || ' ' || pay_order_id || ' ' || trans_id || ' ' || "
	                        "gateway_status || ' ' || pay_succ_time FROM charges "
	                        "WHERE mch_order_no = $1",
	                        "T-nt-1"),
	                    "succeeded PO-1001 T-BANK-1 2 2030-06-15 10:00:00");
	audits = atol(one("SELECT count(*) FROM audit_log WHERE entity = 'charges' AND entity_id = "
	                  "(SELECT id::text FROM charges WHERE mch_order_no = $1)",
	                  "T-nt-1"));
	assert_int_equal(audits, 2);    /* inserted, succeeded */
	expect_notify(body, "SUCCESS"); /* the replay: answered, nothing written */
	assert_int_equal(atol(one("SELECT count(*) FROM audit_log WHERE entity = 'charges' AND "
	                          "entity_id = (SELECT id::text FROM charges WHERE mch_order_no = "
	                          "$1)",
	                          "T-nt-1")),
	                 audits);
	free(body);

	/* Another payOrderId for the settled charge is not recorded. */
	notify_msg(&m, TS_KEY, TS_MCH_ID, "T-nt-1", "PO-9999", "1500");
	body = msg_json(&m, NULL);
	expect_notify(body, "FAIL");
	free(body);
	assert_string_equal(
	    one("SELECT pay_order_id FROM charges WHERE mch_order_no = $1", "T-nt-1"), "PO-1001");
}

/* A subscription's charge advances its subscription when recorded, which
 * only the scheduler does: a signed notify for one is answered (there is
 * nothing for the gateway to send again) and changes nothing; the
 * scheduler's cc_query settles it. */
static void test_notify_for_subscription_charge_changes_nothing(void **state)
{
	struct msg m;
	char *body;
	long audits;

	(void)state;
	new_customer("nt_sub");
	sql(db,
	    "WITH p AS (INSERT INTO plans (code, version, name, amount_cents, currency, interval,"
	    "                              interval_count, checksum)"
	    "           VALUES ('nt_sub', 1, 'Sub', 1500, 'CAD', 'month', 1, 'x') RETURNING id),"
	    " s AS (INSERT INTO subscriptions (customer_id, plan_id, state, anchor)"
	    "       SELECT $1, p.id, 'active', now() FROM p RETURNING id, plan_id)"
	    " INSERT INTO charges (mch_order_no, kind, subscription_id, period, attempt,"
	    "                      customer_id, plan_id, amount_cents)"
	    " SELECT 'T-nt-sub', 'subscription', s.id, 0, 1, $1, s.plan_id, 1500 FROM s",
	    1, "nt_sub");
	audits = audit_rows("nt_sub");
	notify_msg(&m, TS_KEY, TS_MCH_ID, "T-nt-sub", "PO-2001", "1500");
	body = msg_json(&m, NULL);
	expect_notify(body, "SUCCESS");
	free(body);
	assert_string_equal(one("SELECT state || ' ' || coalesce(pay_order_id, '-') FROM charges "
	                        "WHERE mch_order_no = $1",
	                        "T-nt-sub"),
	                    "pending -");
	assert_string_equal(one("SELECT count(*) FROM audit_log WHERE entity = 'charges' AND "
	                        "entity_id = (SELECT id::text FROM charges WHERE mch_order_no = $1)"
	                        " AND new_state <> 'pending'",
	                        "T-nt-sub"),
	                    "0");
	assert_int_equal(audit_rows("nt_sub"), audits);
}

static void test_notify_rejects_and_changes_nothing(void **state)
{
	struct msg m;
	char *body;
	long audits;

	(void)state;
	new_customer("nt_bad");
	new_charge("nt_bad", "T-nt-2", "2000");
	audits = atol(one("SELECT count(*) FROM audit_log", NULL));

	notify_msg(&m, "WRONGKEY0123456789abcdef", TS_MCH_ID, "T-nt-2", "PO-2", "2000");
	body = msg_json(&m, NULL); /* forged */
	expect_notify(body, "FAIL");
	free(body);
	notify_msg(&m, TS_KEY, TS_MCH_ID, "T-nt-2", "PO-2", "2000");
	body = msg_json(&m, "transId"); /* truncated */
	expect_notify(body, "FAIL");
	free(body);
	notify_msg(&m, NULL, TS_MCH_ID, "T-nt-2", "PO-2", "2000");
	body = msg_json(&m, NULL); /* unsigned */
	expect_notify(body, "FAIL");
	free(body);
	notify_msg(&m, TS_KEY, "99999999", "T-nt-2", "PO-2", "2000");
	body = msg_json(&m, NULL); /* signed with our key for another merchant id */
	expect_notify(body, "FAIL");
	free(body);
	notify_msg(&m, TS_KEY, TS_MCH_ID, "T-nt-2", "PO-2", "1999");
	body = msg_json(&m, NULL); /* the amount differs from the charge */
	expect_notify(body, "FAIL");
	free(body);
	notify_msg(&m, TS_KEY, TS_MCH_ID, "T-nt-unknown", "PO-3", "2000");
	body = msg_json(&m, NULL); /* an order we never sent */
	expect_notify(body, "FAIL");
	free(body);
	expect_notify("{\"payOrderId\":", "FAIL"); /* not JSON */

	assert_string_equal(one("SELECT state || coalesce(pay_order_id, '-') FROM charges "
	                        "WHERE mch_order_no = $1",
	                        "T-nt-2"),
	                    "pending-");
	assert_int_equal(atol(one("SELECT count(*) FROM audit_log", NULL)), audits);
}

/* A pay link through the fake: cc_purchase with our notifyUrl, the customer
 * pays on the hosted page, the fake POSTs its signed notify to us. */
static void test_notify_from_the_gateway(void **state)
{
	char err[256], notify_url[256], *loc;
	struct gw_client *gw = gw_client_new(&cfg.gateway, err, sizeof(err));
	struct gw_request req = {.call = GW_PURCHASE,
	                         .mch_order_no = "T-link-1",
	                         .customer_id = "nt_link",
	                         .amount = 4200,
	                         .notify_url = notify_url,
	                         .return_url = "https://example.com/paid"};
	struct gw_result res;
	int i;

	(void)state;
	assert_non_null(gw);
	new_customer("nt_link");
	new_charge("nt_link", "T-link-1", "4200");
	snprintf(notify_url, sizeof(notify_url), "http://127.0.0.1:%d/iotpay/notify",
	         listener_port(lst));
	assert_int_equal(gw_call(gw, &req, &res), GW_SUCCESS);
	loc = ts_fakegw_hosted(res.pay_url, "card=4501161234567214&expiry=0728");
	assert_non_null(loc);
	free(loc);
	for (i = 0;
	     i < 100 && strcmp(one("SELECT state FROM charges WHERE mch_order_no = $1", "T-link-1"),
	                       "succeeded") != 0;
	     i++)
		usleep(50000);
	assert_string_equal(one("SELECT state FROM charges WHERE mch_order_no = $1", "T-link-1"),
	                    "succeeded");
	assert_string_not_equal(one("SELECT coalesce(pay_order_id, '') FROM charges "
	                            "WHERE mch_order_no = $1",
	                            "T-link-1"),
	                        "");
	gw_client_free(gw);
}

/* ---- enrolment end to end ---- */

static void enrol_through_fake(struct listener *l, const struct cfg *c, const char *id,
                               const char *card_query, const char *landing)
{
	char err[256], pay_url[1024], prefix[256], *loc;
	struct gw_client *gw = gw_client_new(&c->gateway, err, sizeof(err));
	struct resp r;

	assert_non_null(gw);
	if (customers_enrol(db, gw, c, id, "ann@example.com", "Ann", (int64_t)time(NULL), pay_url,
	                    sizeof(pay_url), err, sizeof(err)) < 0)
		fail_msg("customers_enrol: %s", err);
	assert_string_equal(customer_state(id), "pending");
	loc = ts_fakegw_hosted(pay_url, card_query);
	assert_non_null(loc);
	snprintf(prefix, sizeof(prefix), "http://127.0.0.1:%d/iotpay/return?", listener_port(l));
	assert_memory_equal(loc, prefix, strlen(prefix));
	get(loc, &r);
	assert_int_equal(r.status, 302);
	assert_string_equal(r.location, landing);
	free(r.body);
	free(loc);
	gw_client_free(gw);
}

static void test_enrolment_end_to_end(void **state)
{
	struct customer cu;
	char err[256], pay_url[1024];
	struct gw_client *gw;

	(void)state;
	enrol_through_fake(lst, &cfg, "e2e_1", "card=4501161234567214&expiry=0728",
	                   cfg.success_url);
	assert_int_equal(customers_get(db, "e2e_1", &cu, err, sizeof(err)), 0);
	assert_string_equal(cu.state, "bound");
	assert_string_equal(cu.card_masked, "450116XXXXXX7214");
	assert_string_equal(cu.card_type, "V");
	assert_string_equal(cu.card_expiry, "0728");
	assert_string_equal(cu.email, "ann@example.com");

	/* bound: no second enrolment */
	gw = gw_client_new(&cfg.gateway, err, sizeof(err));
	assert_int_equal(customers_enrol(db, gw, &cfg, "e2e_1", NULL, NULL, (int64_t)time(NULL),
	                                 pay_url, sizeof(pay_url), err, sizeof(err)),
	                 -1);
	assert_non_null(strstr(err, "customer e2e_1 is already bound to card 450116XXXXXX7214"));
	gw_client_free(gw);

	/* a refused card, then a second try that works */
	enrol_through_fake(lst, &cfg, "e2e_2", "card=4501161234567214&expiry=0728&result=fail",
	                   cfg.failure_url);
	assert_string_equal(customer_state("e2e_2"), "failed");
	enrol_through_fake(lst, &cfg, "e2e_2", "card=5500001234560004&expiry=1129",
	                   cfg.success_url);
	assert_int_equal(customers_get(db, "e2e_2", &cu, err, sizeof(err)), 0);
	assert_string_equal(cu.state, "bound");
	assert_string_equal(cu.card_expiry, "1129");
}

/* enrolment.return_url with a query of its own: customerId is appended with
 * '&' and the listener still finds the gateway's signed fields. */
static void test_enrolment_return_url_with_query(void **state)
{
	struct cfg c = cfg;
	struct listener *l;

	(void)state;
	snprintf(c.listen_address, sizeof(c.listen_address), "127.0.0.1:0");
	l = start_at_self(&c, "?src=email");
	enrol_through_fake(l, &c, "e2e_q", "card=4501161234567214&expiry=0728", c.success_url);
	assert_string_equal(customer_state("e2e_q"), "bound");
	listener_stop(l);
}

/* ---- limits, paths, methods ---- */

static void test_limits_paths_methods(void **state)
{
	size_t big = 64 * 1024;
	char *q = malloc(big + 64), *body = malloc(big);
	struct resp r;

	(void)state;
	assert_non_null(q);
	assert_non_null(body);
	/* query strings: 4 KiB is the limit, whoever answers beyond it */
	snprintf(q, big + 64, "/nothing?x=");
	memset(q + 11, 'a', 4096 - 2);
	q[11 + 4096 - 2] = '\0';
	expect_return_status(q, 404); /* exactly 4 KiB */
	strcat(q, "a");
	expect_return_status(q, 414);
	snprintf(q, big + 64, "/iotpay/return?x=");
	memset(q + 17, 'a', big - 20);
	q[17 + big - 20] = '\0';
	expect_return_status(q, 414);

	/* bodies: 16 KiB is the limit, with or without Content-Length */
	memset(body, ' ', big);
	request("POST", "/iotpay/notify", body, 16 * 1024, 0, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "FAIL"); /* read whole, then refused as not JSON */
	free(r.body);
	request("POST", "/iotpay/notify", body, 16 * 1024 + 1, 0, &r);
	assert_int_equal(r.status, 413);
	free(r.body);
	request("POST", "/iotpay/notify", body, 16 * 1024 + 1, 1, &r);
	assert_int_equal(r.status, 413);
	free(r.body);
	request("POST", "/iotpay/notify", body, big, 1, &r);
	assert_int_equal(r.status, 413);
	free(r.body);

	expect_return_status("/", 404);
	expect_return_status("/iotpay/returnx", 404);
	expect_return_status("/metrics/", 404);
	/* monitoring is on the admin address only */
	expect_return_status("/healthz", 404);
	expect_return_status("/metrics", 404);
	request("POST", admin_url("/healthz"), "{}", 2, 0, &r);
	assert_int_equal(r.status, 405);
	assert_string_equal(r.allow, "GET");
	free(r.body);
	get(admin_url("/iotpay/return"), &r);
	assert_int_equal(r.status, 404);
	free(r.body);
	get("/iotpay/notify", &r);
	assert_int_equal(r.status, 405);
	assert_string_equal(r.allow, "POST");
	free(r.body);
	request("DELETE", "/iotpay/return", NULL, 0, 0, &r);
	assert_int_equal(r.status, 405);
	free(r.body);
	free(q);
	free(body);
}

/* Sends req as is on a new connection to the listener; returns the status
 * of the answer (0: none). */
static int raw_status(const char *req)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(listener_port(lst))};
	char buf[512];
	size_t n = 0;
	ssize_t k;
	int fd = socket(AF_INET, SOCK_STREAM, 0), status = 0;

	assert_true(fd >= 0);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(write(fd, req, strlen(req)), (ssize_t)strlen(req));
	shutdown(fd, SHUT_WR);
	while (n < sizeof(buf) - 1 && (k = read(fd, buf + n, sizeof(buf) - 1 - n)) > 0)
		n += (size_t)k;
	buf[n] = '\0';
	close(fd);
	sscanf(buf, "HTTP/1.%*d %d", &status);
	return status;
}

/* Two Content-Length headers: a proxy in front may frame the body by the
 * other one (request smuggling). Refused, equal or not, on every path. */
static void test_duplicate_content_length(void **state)
{
	(void)state;
	assert_int_equal(raw_status("POST /iotpay/notify HTTP/1.1\r\nHost: x\r\n"
	                            "Content-Length: 2\r\nContent-Length: 40\r\n\r\n{}"),
	                 400);
	assert_int_equal(raw_status("POST /iotpay/notify HTTP/1.1\r\nHost: x\r\n"
	                            "Content-Length: 2\r\ncontent-length: 2\r\n\r\n{}"),
	                 400);
	assert_int_equal(raw_status("GET /healthz HTTP/1.1\r\nHost: x\r\n"
	                            "Content-Length: 0\r\nContent-Length: 0\r\n\r\n"),
	                 400);
	/* one is fine */
	assert_int_equal(raw_status("POST /iotpay/notify HTTP/1.1\r\nHost: x\r\n"
	                            "Content-Length: 2\r\nConnection: close\r\n\r\n{}"),
	                 200);
}

/* The hostile-HTTP round against the running listener (with the replayed
 * returns and the subscription's notify above): control bytes in every
 * callback field reach the log escaped, one line per event; a signed
 * notify behind a duplicate header is not recorded; a signed return
 * replayed with another enrolment's token changes nothing. */
static void test_hostile_http(void **state)
{
	char log_path[] = "/tmp/test_hostile_http.XXXXXX", req[4096], ev[64], *log, *body;
	struct msg m;
	struct resp r;
	int fd, saved;

	(void)state;
	new_customer("hx_1");
	new_charge("hx_1", "T-hx-1", "1500");
	fd = mkstemp(log_path);
	assert_true(fd >= 0);
	fflush(stderr);
	saved = dup(2);
	dup2(fd, 2);

	/* control bytes: in a return's query, a notify's fields, a path */
	get("/iotpay/return?retCode=SUCCESS&customerId=a%0d%0als%3dinjected%1b%5b31m&sign=x", &r);
	free(r.body);
	post("/iotpay/notify",
	     "{\"mchId\":\"" TS_MCH_ID "\",\"mchOrderNo\":\"T\\r\\nlevel=error event=forged"
	     "\\u001b[2J\",\"sign\":\"00\"}",
	     &r);
	assert_string_equal(r.body, "FAIL");
	free(r.body);
	assert_int_equal(raw_status("GET /iotpay/return?customerId=%07%08%7f HTTP/1.1\r\n"
	                            "Host: x\r\nConnection: close\r\n\r\n"),
	                 403);

	/* a genuine notify behind two Content-Length headers is not taken */
	notify_msg(&m, TS_KEY, TS_MCH_ID, "T-hx-1", "PO-hx-1", "1500");
	body = msg_json(&m, NULL);
	snprintf(req, sizeof(req),
	         "POST /iotpay/notify HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n"
	         "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
	         strlen(body), strlen(body), body);
	assert_int_equal(raw_status(req), 400);
	free(body);
	assert_string_equal(one("SELECT state FROM charges WHERE mch_order_no = $1", "T-hx-1"),
	                    "pending");

	/* a genuine return with a stale token */
	return_success(&m, TS_KEY, "hx_1");
	snprintf(req, sizeof(req), "%s&enrolment=0123456789abcdef0123456789abcdef",
	         msg_return_path(&m, NULL));
	get(req, &r);
	free(r.body);
	assert_string_equal(customer_state("hx_1"), "pending");

	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	close(fd);
	log = ts_read_file(log_path);
	unlink(log_path);
	fputs(log, stderr);
	/* every line is one event: nothing injected a line or a terminal code */
	for (char *line = log; *line; line = strchr(line, '\n') + 1) {
		assert_memory_equal(line, "ts=", 3);
		assert_null(memchr(line, '\r', strcspn(line, "\n")));
		assert_null(memchr(line, '\x1b', strcspn(line, "\n")));
		assert_int_equal(ts_logfmt_get(line, "event", ev, sizeof(ev)), 0);
		assert_string_not_equal(ev, "forged");
		if (!strchr(line, '\n'))
			break;
	}
	assert_non_null(strstr(log, "callback_rejected"));
	free(log);
}

/* ---- concurrency ---- */

#define CONCURRENT 1000

static void test_thousand_concurrent_requests(void **state)
{
	static struct resp rs[CONCURRENT];
	static CURL *hs[CONCURRENT];
	char url_r[4200], from[32];
	struct msg m;
	CURLM *multi = curl_multi_init();
	CURLMsg *cm;
	int running = 1, left, i, done = 0;
	long audits;

	(void)state;
	new_customer("conc");
	return_success(&m, TS_KEY, "conc");
	snprintf(url_r, sizeof(url_r), "http://127.0.0.1:%d%s", listener_port(lst),
	         msg_return_path(&m, NULL));
	get(url_r, &rs[0]); /* bind first: the rest are replays */
	assert_int_equal(rs[0].status, 302);
	free(rs[0].body);
	audits = audit_rows("conc");
	curl_multi_setopt(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, 0L);
	for (i = 0; i < CONCURRENT; i++) {
		hs[i] = easy(url_r, &rs[i]);
		/* from 32 addresses: a client is allowed PER_IP (64) at once */
		snprintf(from, sizeof(from), "host!127.0.1.%d", i % 32 + 1);
		curl_easy_setopt(hs[i], CURLOPT_INTERFACE, from);
		curl_easy_setopt(hs[i], CURLOPT_FORBID_REUSE, 1L);
		curl_easy_setopt(hs[i], CURLOPT_PRIVATE, &rs[i]);
		curl_multi_add_handle(multi, hs[i]);
	}
	while (running) {
		assert_int_equal(curl_multi_perform(multi, &running), CURLM_OK);
		while ((cm = curl_multi_info_read(multi, &left)) != NULL)
			if (cm->msg == CURLMSG_DONE) {
				struct resp *r;
				curl_easy_getinfo(cm->easy_handle, CURLINFO_PRIVATE, (char **)&r);
				finish(cm->easy_handle, cm->data.result, r);
				done++;
			}
		if (running)
			curl_multi_poll(multi, NULL, 0, 1000, NULL);
	}
	assert_int_equal(done, CONCURRENT);
	for (i = 0; i < CONCURRENT; i++) {
		assert_int_equal(rs[i].status, 302);
		assert_string_equal(rs[i].location, cfg.success_url);
		curl_multi_remove_handle(multi, hs[i]);
		curl_easy_cleanup(hs[i]);
		free(rs[i].body);
	}
	curl_multi_cleanup(multi);
	assert_int_equal(audit_rows("conc"), audits);
}

/* ---- /healthz ---- */

static void test_healthz(void **state)
{
	char url[600], err[256];
	struct cfg c = cfg;
	struct admin *a;
	struct resp r;
	PGconn *admin;

	(void)state;
	get(admin_url("/healthz"), &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "ok\n");
	free(r.body);

	/* the database restarted under us: the pool reconnects, no 503 */
	sql(db,
	    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
	    "WHERE application_name LIKE 'billingd-admin:%' AND datname = current_database()",
	    0);
	get(admin_url("/healthz"), &r);
	assert_int_equal(r.status, 200);
	free(r.body);

	/* a database without the schema: the part, nothing else */
	admin = ts_db_connect(db_url);
	sql(admin, "DROP DATABASE IF EXISTS t_listener_empty WITH (FORCE)", 0);
	sql(admin, "CREATE DATABASE t_listener_empty", 0);
	PQfinish(admin);
	snprintf(url, sizeof(url), "%s_empty", db_url);
	snprintf(c.database_url, sizeof(c.database_url), "%s", url);
	a = admin_start(&c, NULL, err, sizeof(err));
	assert_non_null(a);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/healthz", admin_port(a));
	get(url, &r);
	assert_int_equal(r.status, 503);
	assert_string_equal(r.body, "schema\n");
	free(r.body);
	admin_stop(a);

	/* no database at all: the part, without its host, port or user */
	snprintf(c.database_url, sizeof(c.database_url),
	         "postgresql://billing:secretpw@127.0.0.1:1/none");
	a = admin_start(&c, NULL, err, sizeof(err));
	assert_non_null(a);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/healthz", admin_port(a));
	get(url, &r);
	assert_int_equal(r.status, 503);
	assert_string_equal(r.body, "database\n");
	free(r.body);
	admin_stop(a);
}

static void test_bad_listen_address(void **state)
{
	struct cfg c = cfg;
	char err[256];

	(void)state;
	snprintf(c.listen_address, sizeof(c.listen_address), "127.0.0.1");
	assert_null(listener_start(&c, NULL, err, sizeof(err)));
	assert_string_equal(err, "listen.address '127.0.0.1': expected host:port");
	snprintf(c.listen_address, sizeof(c.listen_address), "127.0.0.1:%d", listener_port(lst));
	assert_null(listener_start(&c, NULL, err, sizeof(err))); /* in use */
	assert_non_null(strstr(err, "cannot listen"));
	snprintf(c.admin_address, sizeof(c.admin_address), "localhost");
	assert_null(admin_start(&c, NULL, err, sizeof(err)));
	assert_string_equal(err, "admin.address 'localhost': expected host:port");
	snprintf(c.admin_address, sizeof(c.admin_address), "127.0.0.1:%d", admin_port(adm));
	assert_null(admin_start(&c, NULL, err, sizeof(err)));
	assert_non_null(strstr(err, "admin.address"));
}

/* ---- /metrics: a validator of the Prometheus text format 0.0.4 ---- */

#define MAX_FAMILIES 32

struct family {
	char name[128], type[16];
	int help, samples;
	/* histogram state */
	double last_le, last_bucket, inf, count;
	int has_inf, has_sum, has_count;
};

struct checker {
	struct family f[MAX_FAMILIES];
	int n, current;
	char why[256];
};

static int name_char(int c, int first)
{
	return isalpha(c) || c == '_' || c == ':' || (!first && isdigit(c));
}

/* Parses a metric name at *p; 0 when there is none. */
static size_t parse_name(const char *p, int label)
{
	size_t n = 0;

	while (p[n] && name_char((unsigned char)p[n], n == 0) && !(label && p[n] == ':'))
		n++;
	return n;
}

static int parse_float(const char *s, double *v)
{
	char *end;

	if (strcmp(s, "+Inf") == 0 || strcmp(s, "-Inf") == 0 || strcmp(s, "NaN") == 0) {
		*v = strcmp(s, "NaN") == 0 ? NAN : s[0] == '+' ? INFINITY : -INFINITY;
		return 0;
	}
	if (!*s || isspace((unsigned char)*s))
		return -1;
	*v = strtod(s, &end);
	return *end == '\0' ? 0 : -1;
}

static struct family *family_of(struct checker *c, const char *name, size_t len)
{
	int i;

	for (i = 0; i < c->n; i++)
		if (strlen(c->f[i].name) == len && memcmp(c->f[i].name, name, len) == 0)
			return &c->f[i];
	return NULL;
}

#define BAD(...)                                                                                   \
	do {                                                                                       \
		snprintf(c->why, sizeof(c->why), __VA_ARGS__);                                     \
		return -1;                                                                         \
	} while (0)

static int check_comment(struct checker *c, const char *line)
{
	int help = strncmp(line, "# HELP ", 7) == 0, type = strncmp(line, "# TYPE ", 7) == 0;
	const char *p = line + 7;
	size_t n = parse_name(p, 0);
	struct family *f;

	if (!help && !type)
		return 0; /* a plain comment */
	if (n == 0 || p[n] != ' ')
		BAD("bad metric name in '%.120s'", line);
	f = family_of(c, p, n);
	if (!f) {
		if (c->n == MAX_FAMILIES)
			BAD("too many families");
		f = &c->f[c->n++];
		memset(f, 0, sizeof(*f));
		snprintf(f->name, sizeof(f->name), "%.*s", (int)n, p);
		f->last_le = -INFINITY;
	}
	if (f->samples)
		BAD("%s after samples of %s", help ? "HELP" : "TYPE", f->name);
	if (help) {
		if (f->help++)
			BAD("second HELP for %s", f->name);
		if (!p[n + 1])
			BAD("empty HELP for %s", f->name);
	} else {
		if (f->type[0])
			BAD("second TYPE for %s", f->name);
		if (strcmp(p + n + 1, "counter") && strcmp(p + n + 1, "gauge") &&
		    strcmp(p + n + 1, "histogram") && strcmp(p + n + 1, "summary") &&
		    strcmp(p + n + 1, "untyped"))
			BAD("bad TYPE '%.40s'", p + n + 1);
		snprintf(f->type, sizeof(f->type), "%s", p + n + 1);
	}
	c->current = (int)(f - c->f);
	return 0;
}

/* {a="x",b="y"}: fills le when there is an "le" label. */
static int check_labels(struct checker *c, const char **pp, char *le, size_t lelen)
{
	const char *p = *pp;

	le[0] = '\0';
	if (*p != '{')
		return 0;
	p++;
	while (*p != '}') {
		size_t n = parse_name(p, 1);
		int is_le = n == 2 && memcmp(p, "le", 2) == 0;
		size_t at = 0;

		if (n == 0 || p[n] != '=' || p[n + 1] != '"')
			BAD("bad label at '%.120s'", p);
		for (p += n + 2; *p != '"'; p++) {
			if (!*p || *p == '\n')
				BAD("unterminated label value");
			if (*p == '\\' && p[1] != '\\' && p[1] != '"' && p[1] != 'n')
				BAD("bad escape in label value");
			if (*p == '\\')
				p++;
			if (is_le && at + 1 < lelen)
				le[at++] = *p;
		}
		if (is_le)
			le[at] = '\0';
		p++;
		if (*p == ',')
			p++;
		else if (*p != '}')
			BAD("expected , or } at '%.120s'", p);
	}
	*pp = p + 1;
	return 0;
}

static int check_sample(struct checker *c, const char *line)
{
	static const char *const suffixes[] = {"_bucket", "_sum", "_count"};
	size_t n = parse_name(line, 0), k;
	const char *p = line + n;
	char le[32], value[64];
	struct family *f = NULL;
	double v, lev;
	int suffix = -1;

	if (n == 0)
		BAD("bad sample line '%.120s'", line);
	f = family_of(c, line, n);
	for (k = 0; !f && k < 3; k++) {
		size_t sl = strlen(suffixes[k]);
		if (n > sl && memcmp(line + n - sl, suffixes[k], sl) == 0 &&
		    (f = family_of(c, line, n - sl)) != NULL)
			suffix = (int)k;
	}
	if (!f || !f->type[0] || !f->help)
		BAD("sample '%.*s' without HELP and TYPE before it", (int)n, line);
	if (suffix >= 0 && strcmp(f->type, "histogram") != 0)
		BAD("%s: suffix on a %s", f->name, f->type);
	if (strcmp(f->type, "histogram") == 0 && suffix < 0)
		BAD("%s: histogram sample without _bucket/_sum/_count", f->name);
	if (f - c->f != c->current)
		BAD("%s: samples not grouped under their family", f->name);
	if (check_labels(c, &p, le, sizeof(le)) < 0)
		return -1;
	if (*p != ' ' || sscanf(p + 1, "%63s", value) != 1 || parse_float(value, &v) < 0)
		BAD("bad value in '%.120s'", line);
	p += 1 + strlen(value);
	if (*p && (*p != ' ' || strspn(p + 1, "-0123456789") != strlen(p + 1)))
		BAD("bad timestamp in '%.120s'", line);
	if (strcmp(f->type, "counter") == 0 &&
	    (v < 0 || strcmp(f->name + strlen(f->name) - 6, "_total") != 0))
		BAD("%s: a counter is named *_total and never negative", f->name);
	f->samples++;
	if (suffix == 0) {
		if (!le[0] || parse_float(le, &lev) < 0)
			BAD("%s: bucket without a float le", f->name);
		if (f->has_inf || lev <= f->last_le)
			BAD("%s: buckets not in increasing le order", f->name);
		if (v < f->last_bucket)
			BAD("%s: buckets not cumulative at le=%s", f->name, le);
		f->last_le = lev;
		f->last_bucket = v;
		if (isinf(lev)) {
			f->has_inf = 1;
			f->inf = v;
		}
	} else if (suffix == 1) {
		f->has_sum = 1;
	} else if (suffix == 2) {
		f->has_count = 1;
		f->count = v;
	}
	return 0;
}

/* 0 when text is valid exposition format; else -1 with the reason in c. */
static int prom_check(struct checker *c, const char *text)
{
	const char *p = text;
	char line[1024];
	int i;

	memset(c, 0, sizeof(*c));
	c->current = -1;
	if (!*text || text[strlen(text) - 1] != '\n')
		BAD("empty, or the last line does not end with a newline");
	while (*p) {
		size_t n = strcspn(p, "\n");
		if (n >= sizeof(line) || n == 0)
			BAD("line too long or empty");
		snprintf(line, sizeof(line), "%.*s", (int)n, p);
		if ((line[0] == '#' ? check_comment(c, line) : check_sample(c, line)) < 0)
			return -1;
		p += n + 1;
	}
	for (i = 0; i < c->n; i++) {
		struct family *f = &c->f[i];
		if (!f->help || !f->type[0] || !f->samples)
			BAD("%s: needs HELP, TYPE and samples", f->name);
		if (strcmp(f->type, "histogram") == 0 &&
		    (!f->has_inf || !f->has_sum || !f->has_count || f->inf != f->count))
			BAD("%s: needs le=\"+Inf\" == _count and _sum", f->name);
	}
	return 0;
}

/* The value of the sample whose series (name and labels) is exactly s. */
static double sample(const char *text, const char *s)
{
	size_t n = strlen(s);
	const char *p;

	for (p = text; p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
		if (strncmp(p, s, n) == 0 && p[n] == ' ')
			return strtod(p + n + 1, NULL);
	fail_msg("no sample %s", s);
	return -1;
}

static void test_prom_checker_catches_mistakes(void **state)
{
	static const char *const bad[] = {
	    "x 1\n",                                         /* no HELP/TYPE */
	    "# HELP x h\n# TYPE x gauge\nx 1",               /* no final newline */
	    "# HELP x h\n# TYPE x gauge\nx one\n",           /* value */
	    "# HELP x h\n# TYPE x gauge\nx{a=\"1} 1\n",      /* label */
	    "# HELP x h\n# TYPE x gauge\nx{1a=\"1\"} 1\n",   /* label name */
	    "# HELP x h\n# TYPE x gauge\nx 1\n# HELP x h\n", /* HELP after samples */
	    "# HELP x_total h\n# TYPE x_total counter\nx_total -1\n",
	    "# HELP h h\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"2\"} 1\n"
	    "h_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 2\n", /* not cumulative */
	    "# HELP h h\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\n"
	    "h_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n", /* +Inf != count */
	    "# HELP a h\n# TYPE a gauge\n# HELP b h\n# TYPE b gauge\nb 1\na 1\n", /* grouping */
	};
	struct checker c;
	size_t i;

	(void)state;
	assert_int_equal(prom_check(&c, "# HELP h h\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\n"
	                                "h_bucket{le=\"+Inf\"} 2\nh_sum 1.5\nh_count 2\n"),
	                 0);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (prom_check(&c, bad[i]) == 0)
			fail_msg("accepted bad exposition #%zu", i);
}

static void metrics_fixture(PGconn *c)
{
	char plan[32];
	PGresult *r;

	sql(c,
	    "INSERT INTO customers (customer_id, state, card_masked, card_expiry) VALUES "
	    "('m_soon', 'bound', '450116XXXXXX7214', '0630'), "    /* ends 2030-07-01 */
	    "('m_expired', 'bound', '450116XXXXXX7214', '0530'), " /* already expired */
	    "('m_far', 'bound', '450116XXXXXX7214', '0730'), "     /* ends 2030-08-01 */
	    "('m_failed', 'failed', '450116XXXXXX7214', '0630'), " /* not bound */
	    "('m_p1', 'pending', NULL, NULL), ('m_p2', 'pending', NULL, NULL)",
	    0);
	r = PQexec(c, "INSERT INTO plans (code, version, name, amount_cents, currency, interval, "
	              "interval_count, checksum) VALUES ('basic', 1, 'Basic', 1000, 'CAD', "
	              "'month', 1, 'x') RETURNING id");
	assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
	snprintf(plan, sizeof(plan), "%s", PQgetvalue(r, 0, 0));
	PQclear(r);
	sql(c,
	    "INSERT INTO subscriptions (customer_id, plan_id, state, anchor, next_charge_at) "
	    "VALUES "
	    "('m_soon', $1, 'active', to_timestamp($2 - 86400), to_timestamp($2 - 3600)), "
	    "('m_soon', $1, 'past_due', to_timestamp($2 - 86400), to_timestamp($2 - 86400)), "
	    "('m_soon', $1, 'active', to_timestamp($2 - 86400), to_timestamp($2 + 86400)), "
	    "('m_soon', $1, 'canceled', to_timestamp($2 - 86400), to_timestamp($2 - 3600))",
	    2, plan, "1907712000");
	/* leases run by the database's clock: m-1's ran out, m-2 is in flight;
	 * m-5 is unknown with its lease still running (counted all the same).
	 * Only subscription charges are leased or unknown; m-6, a payment link
	 * waiting to be paid, is open too and counts for nothing. */
	sql(c,
	    "INSERT INTO charges (mch_order_no, kind, subscription_id, period, attempt, "
	    "customer_id, amount_cents, state, lease_expires_at, pay_order_id) "
	    "SELECT v.no, v.kind, s.id, CASE WHEN v.sub > 0 THEN 0 END, CASE WHEN v.sub > 0 THEN 1 "
	    "END, 'm_soon', 100, v.state, now() + v.lease * interval '1 s', v.po FROM (VALUES "
	    "('m-1', 'subscription', 1, 'pending', -60, NULL), "
	    "('m-2', 'subscription', 2, 'pending', 60, NULL), "
	    "('m-3', 'subscription', 3, 'unknown', NULL, NULL), "
	    "('m-4', 'one_off', 0, 'succeeded', NULL, 'PO-m4'), "
	    "('m-5', 'subscription', 4, 'unknown', 60, NULL), "
	    "('m-6', 'one_off', 0, 'pending', NULL, NULL)) AS v(no, kind, sub, state, lease, po) "
	    "LEFT JOIN (SELECT id, row_number() OVER (ORDER BY id) AS k FROM subscriptions) s "
	    "ON s.k = v.sub",
	    0);
	sql(c,
	    "INSERT INTO refunds (mch_refund_no, kind, charge_id, amount_cents, state) "
	    "SELECT 'R-1', 'refund', id, 40, 'succeeded' FROM charges WHERE mch_order_no = 'm-4'",
	    0);
}

/* Scrapes a's /metrics, checks the format; the body in r. */
static void scrape(const struct admin *a, struct resp *r)
{
	struct checker chk;
	char url[128];

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics", admin_port(a));
	get(url, r);
	assert_int_equal(r->status, 200);
	if (prom_check(&chk, r->body) < 0)
		fail_msg("/metrics: %s\n%s", chk.why, r->body);
}

static void test_metrics(void **state)
{
	static const char *const families[] = {"billing_build_info",
	                                       "billing_charges_total",
	                                       "billing_charge_queries_total",
	                                       "billing_gateway_errors_total",
	                                       "billing_charged_cents_total",
	                                       "billing_refunded_cents_total",
	                                       "billing_last_pass_timestamp_seconds",
	                                       "billing_pass_duration_seconds",
	                                       "billing_gateway_request_duration_seconds",
	                                       "billing_gateway_requests_in_flight",
	                                       "billing_subscriptions",
	                                       "billing_due_backlog",
	                                       "billing_unknown_charges",
	                                       "billing_customers",
	                                       "billing_cards_expiring_soon",
	                                       "billing_leader",
	                                       "billing_database_up"};
	const char *h = "billing_gateway_request_duration_seconds";
	struct cfg c = cfg;
	struct checker chk;
	struct admin *a, *b;
	char series[160], err[256];
	PGconn *mdb;
	struct resp r;
	size_t i;

	(void)state;
	snprintf(c.database_url, sizeof(c.database_url), "%s", ts_db_new("listener_metrics"));
	mdb = ts_db_connect(c.database_url);
	metrics_fixture(mdb);
	PQfinish(mdb);
	a = admin_start(&c, test_clock, err, sizeof(err));
	assert_non_null(a);
	for (i = 0; i < 3; i++)
		metrics_charge("success");
	metrics_charge("declined");
	metrics_charge("unknown"); /* not final: not counted */
	metrics_charge("bogus");
	metrics_query("unknown");
	metrics_query("unknown");
	metrics_query("success");
	metrics_charged(2500);
	metrics_gateway_error("auth");
	metrics_pass(T_NOW, 0.25);
	metrics_gateway_observe(0.003);
	metrics_gateway_observe(0.07);
	metrics_gateway_observe(1.5);
	metrics_gateway_observe(100);
	metrics_in_flight(7);

	scrape(a, &r);
	prom_check(&chk, r.body);
	for (i = 0; i < sizeof(families) / sizeof(families[0]); i++)
		if (!family_of(&chk, families[i], strlen(families[i])))
			fail_msg("no family %s", families[i]);
	snprintf(series, sizeof(series), "billing_build_info{version=\"%s\"}", BILLING_VERSION);
	assert_true(sample(r.body, series) == 1);
	/* the log's vocabulary */
	assert_true(sample(r.body, "billing_charges_total{outcome=\"success\"}") == 3);
	assert_true(sample(r.body, "billing_charges_total{outcome=\"declined\"}") == 1);
	assert_true(sample(r.body, "billing_charges_total{outcome=\"busy\"}") == 0);
	assert_true(sample(r.body, "billing_charges_total{outcome=\"absent\"}") == 0);
	assert_null(strstr(r.body, "billing_charges_total{outcome=\"unknown\"}"));
	assert_null(strstr(r.body, "outcome=\"fail\""));
	assert_true(sample(r.body, "billing_charge_queries_total{outcome=\"unknown\"}") == 2);
	assert_true(sample(r.body, "billing_charge_queries_total{outcome=\"success\"}") == 1);
	assert_true(sample(r.body, "billing_gateway_errors_total{reason=\"auth\"}") == 1);
	assert_true(sample(r.body, "billing_gateway_errors_total{reason=\"busy\"}") == 0);
	assert_true(sample(r.body, "billing_charged_cents_total{currency=\"CAD\"}") == 2500);
	assert_true(sample(r.body, "billing_refunded_cents_total{currency=\"CAD\"}") == 40);
	assert_true(sample(r.body, "billing_last_pass_timestamp_seconds") == T_NOW);
	assert_true(fabs(sample(r.body, "billing_pass_duration_seconds") - 0.25) < 1e-6);
	snprintf(series, sizeof(series), "%s_bucket{le=\"0.005\"}", h);
	assert_true(sample(r.body, series) == 1);
	snprintf(series, sizeof(series), "%s_bucket{le=\"0.1\"}", h);
	assert_true(sample(r.body, series) == 2);
	snprintf(series, sizeof(series), "%s_bucket{le=\"2.5\"}", h);
	assert_true(sample(r.body, series) == 3);
	snprintf(series, sizeof(series), "%s_bucket{le=\"+Inf\"}", h);
	assert_true(sample(r.body, series) == 4);
	snprintf(series, sizeof(series), "%s_sum", h);
	assert_true(fabs(sample(r.body, series) - 101.573) < 1e-6);
	assert_true(sample(r.body, "billing_gateway_requests_in_flight") == 7);
	assert_true(sample(r.body, "billing_subscriptions{state=\"active\"}") == 2);
	assert_true(sample(r.body, "billing_subscriptions{state=\"past_due\"}") == 1);
	assert_true(sample(r.body, "billing_subscriptions{state=\"canceled\"}") == 1);
	assert_true(sample(r.body, "billing_subscriptions{state=\"trialing\"}") == 0);
	assert_true(sample(r.body, "billing_due_backlog") == 2);
	assert_true(sample(r.body, "billing_unknown_charges") == 3);
	assert_true(sample(r.body, "billing_customers{state=\"pending\"}") == 2);
	assert_true(sample(r.body, "billing_customers{state=\"bound\"}") == 3);
	assert_true(sample(r.body, "billing_customers{state=\"failed\"}") == 1);
	assert_true(sample(r.body, "billing_customers{state=\"unbound\"}") == 0);
	assert_true(sample(r.body, "billing_cards_expiring_soon") == 2);
	assert_true(sample(r.body, "billing_leader") == 1);
	assert_true(sample(r.body, "billing_database_up") == 1);
	assert_non_null(strstr(r.body, "# TYPE billing_gateway_request_duration_seconds "
	                               "histogram\n"));
	free(r.body);

	/* a second daemon on the same database: its own metrics only, so that
	 * a sum() over daemons counts each row once; it takes over when the
	 * leader goes */
	b = admin_start(&c, test_clock, err, sizeof(err));
	assert_non_null(b);
	scrape(b, &r);
	assert_true(sample(r.body, "billing_leader") == 0);
	assert_true(sample(r.body, "billing_database_up") == 1);
	assert_null(strstr(r.body, "# TYPE billing_unknown_charges"));
	assert_null(strstr(r.body, "billing_subscriptions{"));
	assert_true(sample(r.body, "billing_charges_total{outcome=\"success\"}") == 3);
	free(r.body);
	scrape(a, &r);
	assert_true(sample(r.body, "billing_leader") == 1);
	free(r.body);
	admin_stop(a);
	/* its backend ends, and the lock with it, a moment after */
	for (i = 0; i < 40; i++) {
		scrape(b, &r);
		if (sample(r.body, "billing_leader") == 1)
			break;
		free(r.body);
		ts_sleep_ms(50);
	}
	assert_true(sample(r.body, "billing_leader") == 1);
	assert_true(sample(r.body, "billing_unknown_charges") == 3);
	free(r.body);
	admin_stop(b);

	/* without a database: the process's own metrics, still valid */
	snprintf(c.database_url, sizeof(c.database_url),
	         "postgresql://billing:billing@127.0.0.1:1/none");
	a = admin_start(&c, test_clock, err, sizeof(err));
	assert_non_null(a);
	scrape(a, &r);
	assert_true(sample(r.body, "billing_database_up") == 0);
	assert_true(sample(r.body, "billing_leader") == 0);
	assert_true(sample(r.body, "billing_charges_total{outcome=\"success\"}") == 3);
	assert_null(strstr(r.body, "# TYPE billing_due_backlog"));
	free(r.body);
	admin_stop(a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_return_success_binds_and_replay_changes_nothing),
	    cmocka_unit_test(test_return_without_landing_urls),
	    cmocka_unit_test(test_return_fail_marks_failed_never_unbinds),
	    cmocka_unit_test(test_return_rejects_forged_truncated_unsigned),
	    cmocka_unit_test(test_return_replay_never_rebinds_or_moves_card_back),
	    cmocka_unit_test(test_notify_records_once),
	    cmocka_unit_test(test_notify_rejects_and_changes_nothing),
	    cmocka_unit_test(test_notify_for_subscription_charge_changes_nothing),
	    cmocka_unit_test(test_notify_from_the_gateway),
	    cmocka_unit_test(test_enrolment_end_to_end),
	    cmocka_unit_test(test_enrolment_return_url_with_query),
	    cmocka_unit_test(test_limits_paths_methods),
	    cmocka_unit_test(test_duplicate_content_length),
	    cmocka_unit_test(test_hostile_http),
	    cmocka_unit_test(test_thousand_concurrent_requests),
	    cmocka_unit_test(test_healthz),
	    cmocka_unit_test(test_bad_listen_address),
	    cmocka_unit_test(test_prom_checker_catches_mistakes),
	    cmocka_unit_test(test_metrics),
	};

	if (getenv("TEST_FILTER"))
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	return cmocka_run_group_tests(tests, setup, teardown);
}
