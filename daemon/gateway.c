/* gateway.c: the IOTPay Credit Card API V2 client.
 *
 * Every call ends in one of four outcomes (gateway.h). The rule that governs
 * everything here: a request whose fate we cannot prove is GW_UNKNOWN, never
 * GW_FAIL, because a FAIL lets the caller charge again. Requests are
 * validated (API field limits) before anything is sent, signed (sign.h),
 * sent with libcurl's multi interface over keep-alive connections, and the
 * response is classified by gw_classify. Also parses and verifies the signed
 * messages the gateway sends us (notify bodies, returnUrl query strings). */
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <curl/curl.h>
#include <cjson/cJSON.h>
#include <openssl/crypto.h>

#include "gateway.h"

#define GW_MAX_RESPONSE 65536       /* a larger answer is not the gateway's */
#define GW_MAX_AMOUNT   2147483647L /* the API's Int */

/* One request field: its wire name, where it is in struct gw_request, its
 * String(n) limit and whether the call requires it. */
struct fspec {
	const char *wire;
	size_t off;
	int max;
	int required;
};

#define FS(wire, member, max, req)                                                                 \
	{                                                                                          \
		wire, offsetof(struct gw_request, member), max, req                                \
	}
#define FS_END                                                                                     \
	{                                                                                          \
		NULL, 0, 0, 0                                                                      \
	}

static const struct fspec f_purchase[] = {FS("mchOrderNo", mch_order_no, 30, 1),
                                          FS("customerId", customer_id, 30, 1),
                                          FS("subject", subject, 64, 0),
                                          FS("body", body, 250, 0),
                                          FS("notifyUrl", notify_url, 200, 1),
                                          FS("returnUrl", return_url, 200, 1),
                                          FS_END};
static const struct fspec f_adduser[] = {FS("customerId", customer_id, 30, 1),
                                         FS("returnUrl", return_url, 200, 1), FS_END};
static const struct fspec f_token[] = {
    FS("mchOrderNo", mch_order_no, 30, 1), FS("customerId", customer_id, 30, 1),
    FS("subject", subject, 64, 0), FS("body", body, 250, 0), FS_END};
static const struct fspec f_refund[] = {FS("mchRefundNo", mch_refund_no, 30, 1),
                                        FS("payOrderId", pay_order_id, 30, 1), FS_END};
/* Exactly one of the two: checked in validate(). */
static const struct fspec f_query[] = {FS("mchOrderNo", mch_order_no, 30, 0),
                                       FS("payOrderId", pay_order_id, 30, 0), FS_END};
static const struct fspec f_isbinding[] = {FS("customerId", customer_id, 30, 1), FS_END};

/* One endpoint: which of the fixed fields it takes besides mchId. */
struct cspec {
	const char *endpoint;
	const char *login;  /* "jobNo" or "loginName" (same value), or NULL */
	const char *amount; /* "amount" or "refundAmount", or NULL */
	int currency;
	const struct fspec *fields;
};

static const struct cspec calls[] = {
    [GW_PURCHASE] = {"cc_purchase", "jobNo", "amount", 1, f_purchase},
    [GW_ADDUSER] = {"cc_adduser", "jobNo", NULL, 1, f_adduser},
    [GW_PURCHASE_TOKEN] = {"cc_purchasewithtoken", "jobNo", "amount", 1, f_token},
    [GW_REFUND] = {"cc_refund", "loginName", "refundAmount", 1, f_refund},
    [GW_VOID] = {"cc_void", "loginName", NULL, 1, f_refund},
    [GW_QUERY] = {"cc_query", NULL, NULL, 0, f_query},
    [GW_ISBINDING] = {"cc_isbinding", NULL, NULL, 0, f_isbinding},
};
#define NCALLS ((int)(sizeof(calls) / sizeof(calls[0])))

struct gw_client {
	struct cfg_gateway cfg;
	char url[NCALLS][CFG_URL + 32];
	struct curl_slist *headers;
	struct gw_multi *sync; /* gw_call's, made on first use */
};

struct gw_job {
	struct gw_job *prev, *next; /* in the queue (next only) or the active list */
	struct gw_request req;      /* call and the ids gw_classify checks */
	char mch_order_no[31];
	char pay_order_id[31];
	char *body;
	size_t body_len, body_off;
	char *resp;
	size_t resp_len;
	int resp_too_big;
	gw_done_fn done;
	void *udata;
	CURL *easy;
	char errbuf[CURL_ERROR_SIZE];
	struct timespec t0;
	struct gw_result res;
};

struct gw_multi {
	struct gw_client *c;
	CURLM *cm;
	CURLSH *share;
	int max, active, pending;
	struct gw_job *qhead, *qtail; /* submitted, waiting for a slot */
	struct gw_job *running;       /* handed to libcurl */
};

int gw_order_holds_charge(const struct gw_order *o, int reversed)
{
	return reversed || o->status == 2 || o->status == 3;
}

const char *gw_outcome_name(enum gw_outcome o)
{
	switch (o) {
	case GW_INVALID:
		return "invalid";
	case GW_SUCCESS:
		return "success";
	case GW_FAIL:
		return "fail";
	case GW_UNKNOWN:
		return "unknown";
	}
	return "?";
}

/* Copies text made for one log line: control characters become spaces. */
static void copy_line(char *dst, size_t n, const char *src)
{
	size_t i = 0;

	for (; src && src[i] && i + 1 < n; i++)
		dst[i] = (unsigned char)src[i] < 0x20 || src[i] == 0x7f ? ' ' : src[i];
	dst[i] = '\0';
}

static void vdetailf(char *detail, size_t n, const char *fmt, va_list ap)
{
	char tmp[512];

	vsnprintf(tmp, sizeof(tmp), fmt, ap);
	copy_line(detail, n, tmp);
}

static void detailf(char *detail, size_t n, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vdetailf(detail, n, fmt, ap);
	va_end(ap);
}

static int present(const char *s)
{
	return s && s[0];
}

/* Bytes in the UTF-8 sequence at p, 0 when it is not valid UTF-8. */
static int utf8_len(const unsigned char *p)
{
	int n;
	unsigned char lo = 0x80, hi = 0xbf;

	if (p[0] < 0x80)
		return 1;
	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		n = 2;
	else if (p[0] >= 0xe0 && p[0] <= 0xef)
		n = 3;
	else if (p[0] >= 0xf0 && p[0] <= 0xf4)
		n = 4;
	else
		return 0;
	/* no overlong forms, surrogates or code points past U+10FFFF */
	if (p[0] == 0xe0)
		lo = 0xa0;
	else if (p[0] == 0xed)
		hi = 0x9f;
	else if (p[0] == 0xf0)
		lo = 0x90;
	else if (p[0] == 0xf4)
		hi = 0x8f;
	if (p[1] < lo || p[1] > hi)
		return 0;
	for (int i = 2; i < n; i++)
		if ((p[i] & 0xc0) != 0x80)
			return 0;
	return n;
}

/* A String(max): valid UTF-8, no control characters, at most max characters. */
static int check_text(const char *wire, const char *v, int max, char *detail, size_t dl)
{
	const unsigned char *p = (const unsigned char *)v;
	int chars = 0;

	while (*p) {
		int len = utf8_len(p);

		if (!len) {
			detailf(detail, dl, "%s: not valid UTF-8", wire);
			return -1;
		}
		if (*p < 0x20 || *p == 0x7f) {
			detailf(detail, dl, "%s: contains a control character", wire);
			return -1;
		}
		p += len;
		chars++;
	}
	if (chars > max) {
		detailf(detail, dl, "%s: longer than %d characters", wire, max);
		return -1;
	}
	return 0;
}

static const char *field_value(const struct gw_request *req, const struct fspec *f)
{
	const char *v = *(const char *const *)((const char *)req + f->off);

	return present(v) ? v : NULL;
}

static int validate(const struct gw_request *req, char *detail, size_t dl)
{
	const struct cspec *cs;

	if ((int)req->call < 0 || (int)req->call >= NCALLS) {
		detailf(detail, dl, "call: unknown call %d", (int)req->call);
		return -1;
	}
	cs = &calls[req->call];
	for (const struct fspec *f = cs->fields; f->wire; f++) {
		const char *v = field_value(req, f);

		if (!v && f->required) {
			detailf(detail, dl, "%s: required", f->wire);
			return -1;
		}
		if (v && check_text(f->wire, v, f->max, detail, dl) < 0)
			return -1;
	}
	if (req->call == GW_QUERY && present(req->mch_order_no) == present(req->pay_order_id)) {
		detailf(detail, dl, "cc_query: takes exactly one of mchOrderNo and payOrderId");
		return -1;
	}
	if (cs->amount && req->amount <= 0) {
		detailf(detail, dl, "%s: must be a positive number of cents", cs->amount);
		return -1;
	}
	if (cs->amount && req->amount > GW_MAX_AMOUNT) {
		detailf(detail, dl, "%s: larger than %ld", cs->amount, GW_MAX_AMOUNT);
		return -1;
	}
	return 0;
}

/* Validates req and returns its signed JSON body (cJSON_free), or NULL with
 * detail filled. */
static char *build_body(const struct gw_client *c, const struct gw_request *req, char *detail,
                        size_t dl)
{
	const struct cspec *cs;
	struct sign_kv kv[16];
	size_t n = 0;
	char amount[24], sig[33];
	cJSON *o;
	char *s = NULL;

	if (validate(req, detail, dl) < 0)
		return NULL;
	cs = &calls[req->call];
	kv[n++] = (struct sign_kv){"mchId", c->cfg.mch_id};
	if (cs->login)
		kv[n++] = (struct sign_kv){cs->login, c->cfg.job_no};
	if (cs->currency)
		kv[n++] = (struct sign_kv){"currency", "CAD"};
	if (cs->amount) {
		snprintf(amount, sizeof(amount), "%ld", req->amount);
		kv[n++] = (struct sign_kv){cs->amount, amount};
	}
	for (const struct fspec *f = cs->fields; f->wire; f++)
		if (field_value(req, f))
			kv[n++] = (struct sign_kv){f->wire, field_value(req, f)};
	sign_compute(kv, n, c->cfg.merchant_key, sig);

	o = cJSON_CreateObject();
	if (!o || !sig[0])
		goto oom;
	for (size_t i = 0; i < n; i++) {
		/* the amount goes out as the very digits that were signed */
		cJSON *v = kv[i].value == amount
		               ? cJSON_AddRawToObject(o, kv[i].key, amount)
		               : cJSON_AddStringToObject(o, kv[i].key, kv[i].value);
		if (!v)
			goto oom;
	}
	if (!cJSON_AddStringToObject(o, "sign", sig))
		goto oom;
	s = cJSON_PrintUnformatted(o);
	if (!s)
		goto oom;
	cJSON_Delete(o);
	return s;
oom:
	cJSON_Delete(o);
	detailf(detail, dl, "out of memory");
	return NULL;
}

static void result_reset(struct gw_result *res)
{
	memset(res, 0, sizeof(*res));
	res->order.status = -1;
	res->order.amount = -1;
}

static enum gw_outcome unknown(struct gw_result *res, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vdetailf(res->detail, sizeof(res->detail), fmt, ap);
	va_end(ap);
	res->outcome = GW_UNKNOWN;
	return GW_UNKNOWN;
}

/* A JSON number as the text the gateway signed it as ("2000", not "2000.0"). */
static void num_text(double d, char out[32])
{
	if (d == floor(d) && fabs(d) < 1e15) {
		snprintf(out, 32, "%.0f", d);
		return;
	}
	snprintf(out, 32, "%.15g", d);
	if (strtod(out, NULL) != d)
		snprintf(out, 32, "%.17g", d);
}

/* Parses exactly one JSON object filling body[0..len): trailing bytes other
 * than whitespace make it unparseable. */
static cJSON *parse_object(const char *body, size_t len)
{
	const char *end = NULL;
	cJSON *j = cJSON_ParseWithLengthOpts(body, len, &end, 0);

	if (!j)
		return NULL;
	while (end && end < body + len && strchr(" \t\r\n", *end) && *end)
		end++;
	if (!cJSON_IsObject(j) || !end || end != body + len) {
		cJSON_Delete(j);
		return NULL;
	}
	return j;
}

/* An order field as text: strings as they are, numbers as their digits,
 * absent or null as "". -1 when it does not fit or has another type. */
static int order_text(const cJSON *o, const char *name, char *out, size_t n)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
	char num[32];
	const char *s = "";

	if (cJSON_IsString(v))
		s = v->valuestring;
	else if (cJSON_IsNumber(v))
		s = (num_text(v->valuedouble, num), num);
	else if (v && !cJSON_IsNull(v))
		return -1;
	if (strlen(s) >= n)
		return -1;
	copy_line(out, n, s);
	return 0;
}

/* An integer order field given as a number or as digits; -1 when absent. */
static long order_long(const cJSON *o, const char *name)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
	char *end;
	long x;

	if (cJSON_IsNumber(v) && v->valuedouble == floor(v->valuedouble) && v->valuedouble >= 0 &&
	    v->valuedouble <= (double)GW_MAX_AMOUNT)
		return (long)v->valuedouble;
	if (cJSON_IsString(v) && v->valuestring[0] >= '0' && v->valuestring[0] <= '9') {
		x = strtol(v->valuestring, &end, 10);
		if (!*end && x <= GW_MAX_AMOUNT)
			return x;
	}
	return -1;
}

static int parse_order(const cJSON *o, struct gw_order *ord, char *bad, size_t badlen)
{
	static const struct {
		const char *name;
		size_t off, size;
	} text[] = {
	    {"payOrderId", offsetof(struct gw_order, pay_order_id), sizeof(ord->pay_order_id)},
	    {"mchOrderNo", offsetof(struct gw_order, mch_order_no), sizeof(ord->mch_order_no)},
	    {"paySuccTime", offsetof(struct gw_order, pay_succ_time), sizeof(ord->pay_succ_time)},
	    {"originalOrderId", offsetof(struct gw_order, original_order_id),
	     sizeof(ord->original_order_id)},
	    {"payType", offsetof(struct gw_order, pay_type), sizeof(ord->pay_type)},
	};
	const char *tid = cJSON_GetObjectItemCaseSensitive(o, "transId") ? "transId" : "transid";

	for (size_t i = 0; i < sizeof(text) / sizeof(text[0]); i++)
		if (order_text(o, text[i].name, (char *)ord + text[i].off, text[i].size) < 0) {
			snprintf(bad, badlen, "%s", text[i].name);
			return -1;
		}
	if (order_text(o, tid, ord->trans_id, sizeof(ord->trans_id)) < 0) {
		snprintf(bad, badlen, "%s", tid);
		return -1;
	}
	ord->status = (int)order_long(o, "status");
	ord->amount = order_long(o, "amount");
	return 0;
}

/* cc_isbinding FAIL messages that are not a "no": try-later and errors in
 * the request itself (then the binding was never looked at). */
static int isbinding_unanswered(const char *msg)
{
	static const char *const words[] = {"busy",       "try again",    "timeout",
	                                    "timed out",  "system error", "internal error",
	                                    "sign error", "mchId error"};

	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
		if (strcasestr(msg, words[i]))
			return 1;
	return 0;
}

static enum gw_outcome classify_fail(const struct gw_request *req, struct gw_result *res)
{
	const char *msg = res->ret_msg;

	/* A query FAIL proves absence only when it says so; anything else
	 * ("system busy", "sign error") proves nothing. */
	if (req->call == GW_QUERY && !strcasestr(msg, "not exist") && !strcasestr(msg, "not found"))
		return unknown(res, "cc_query FAIL does not prove the order absent: %s", msg);
	if (req->call == GW_ISBINDING && isbinding_unanswered(msg))
		return unknown(res, "cc_isbinding FAIL is not an answer: %s", msg);
	res->outcome = GW_FAIL;
	return GW_FAIL;
}

static enum gw_outcome classify_success(const struct gw_request *req, const cJSON *j,
                                        struct gw_result *res)
{
	const cJSON *url = cJSON_GetObjectItemCaseSensitive(j, "payUrl");
	const cJSON *order = cJSON_GetObjectItemCaseSensitive(j, "order");
	char bad[32];

	switch (req->call) {
	case GW_PURCHASE:
	case GW_ADDUSER:
		if (!cJSON_IsString(url) || !url->valuestring[0])
			return unknown(res, "SUCCESS without a payUrl");
		if (strlen(url->valuestring) >= sizeof(res->pay_url))
			return unknown(res, "payUrl longer than %zu bytes",
			               sizeof(res->pay_url) - 1);
		copy_line(res->pay_url, sizeof(res->pay_url), url->valuestring);
		break;
	case GW_ISBINDING:
		break;
	default:
		if (!cJSON_IsObject(order))
			return unknown(res, "SUCCESS without an order");
		if (parse_order(order, &res->order, bad, sizeof(bad)) < 0)
			return unknown(res, "order field %s is not a short string", bad);
		res->has_order = 1;
		/* an order that is not the one we asked about proves nothing */
		if ((req->call == GW_PURCHASE_TOKEN || req->call == GW_QUERY) &&
		    req->mch_order_no && res->order.mch_order_no[0] &&
		    strcmp(res->order.mch_order_no, req->mch_order_no))
			return unknown(res, "order mchOrderNo %s is not the requested %s",
			               res->order.mch_order_no, req->mch_order_no);
		if (req->call == GW_QUERY && present(req->pay_order_id) &&
		    res->order.pay_order_id[0] &&
		    strcmp(res->order.pay_order_id, req->pay_order_id))
			return unknown(res, "order payOrderId %s is not the requested %s",
			               res->order.pay_order_id, req->pay_order_id);
		if (req->call != GW_QUERY && res->order.status != 2 && res->order.status != 3)
			return unknown(res, "SUCCESS with order status %d", res->order.status);
	}
	res->outcome = GW_SUCCESS;
	return GW_SUCCESS;
}

enum gw_outcome gw_classify(const struct gw_request *req, long http_status, const char *body,
                            size_t len, struct gw_result *res)
{
	const cJSON *code, *msg;
	cJSON *j;
	enum gw_outcome o;

	result_reset(res);
	res->http_status = http_status;
	if (http_status != 200)
		return unknown(res, "HTTP status %ld", http_status);
	if (!body || len == 0)
		return unknown(res, "empty response body");
	j = parse_object(body, len);
	if (!j)
		return unknown(res, "unparseable response body (%zu bytes)", len);
	code = cJSON_GetObjectItemCaseSensitive(j, "retCode");
	msg = cJSON_GetObjectItemCaseSensitive(j, "retMsg");
	if (cJSON_IsString(msg))
		copy_line(res->ret_msg, sizeof(res->ret_msg), msg->valuestring);
	if (!cJSON_IsString(code))
		o = unknown(res, "response without a retCode");
	else if (strcmp(code->valuestring, "FAIL") == 0)
		o = classify_fail(req, res);
	else if (strcmp(code->valuestring, "SUCCESS") == 0)
		o = classify_success(req, j, res);
	else
		o = unknown(res, "unknown retCode \"%.32s\"", code->valuestring);
	cJSON_Delete(j);
	return o;
}

/* ---- transfers ---- */

static size_t on_read(char *buf, size_t size, size_t nmemb, void *ud)
{
	struct gw_job *j = ud;
	size_t k = j->body_len - j->body_off;

	if (k > size * nmemb)
		k = size * nmemb;
	memcpy(buf, j->body + j->body_off, k);
	j->body_off += k;
	return k;
}

/* libcurl re-sends a request whose reused keep-alive connection died before
 * any response byte arrived. For a POST the gateway may already have
 * processed (a charge), that would be a second charge or a "duplicate
 * mchOrderNo" FAIL hiding a success. Refusing to rewind the body makes such a
 * transfer fail (CURLE_SEND_FAIL_REWIND), which is classified UNKNOWN. */
static int on_seek(void *ud, curl_off_t offset, int origin)
{
	(void)ud;
	(void)offset;
	(void)origin;
	return CURL_SEEKFUNC_FAIL;
}

static size_t on_write(char *data, size_t size, size_t nmemb, void *ud)
{
	struct gw_job *j = ud;
	size_t k = size * nmemb;
	char *p;

	if (j->resp_len + k > GW_MAX_RESPONSE) {
		j->resp_too_big = 1;
		return 0;
	}
	p = realloc(j->resp, j->resp_len + k + 1);
	if (!p)
		return 0;
	memcpy(p + j->resp_len, data, k);
	j->resp = p;
	j->resp_len += k;
	p[j->resp_len] = '\0';
	return k;
}

static void job_free(struct gw_job *j)
{
	if (j->easy)
		curl_easy_cleanup(j->easy);
	cJSON_free(j->body);
	free(j->resp);
	free(j);
}

static int job_start(struct gw_multi *m, struct gw_job *j)
{
	const struct cfg_gateway *g = &m->c->cfg;
	CURL *e = curl_easy_init();
	int ok;

	if (!e)
		return -1;
	j->easy = e;
	ok =
	    curl_easy_setopt(e, CURLOPT_URL, m->c->url[j->req.call]) == CURLE_OK &&
	    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") == CURLE_OK &&
	    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1) == CURLE_OK &&
	    curl_easy_setopt(e, CURLOPT_HTTPHEADER, m->c->headers) == CURLE_OK &&
	    curl_easy_setopt(e, CURLOPT_POST, 1L) == CURLE_OK &&
	    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)j->body_len) == CURLE_OK &&
	    curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read) == CURLE_OK &&
	    curl_easy_setopt(e, CURLOPT_READDATA, j) == CURLE_OK &&
	    curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, on_seek) == CURLE_OK &&
	    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write) == CURLE_OK &&
	    curl_easy_setopt(e, CURLOPT_WRITEDATA, j) == CURLE_OK &&
	    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, j->errbuf) == CURLE_OK &&
	    curl_easy_setopt(e, CURLOPT_PRIVATE, j) == CURLE_OK &&
	    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) == CURLE_OK &&
	    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, g->timeout_ms) == CURLE_OK &&
	    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
	                     g->connect_timeout_ms > 0 ? g->connect_timeout_ms : g->timeout_ms) ==
	        CURLE_OK &&
	    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L) == CURLE_OK &&
	    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L) == CURLE_OK &&
	    (!g->ca_file[0] || curl_easy_setopt(e, CURLOPT_CAINFO, g->ca_file) == CURLE_OK) &&
	    curl_easy_setopt(e, CURLOPT_SHARE, m->share) == CURLE_OK;
	if (!ok || curl_multi_add_handle(m->cm, e) != CURLM_OK)
		return -1;
	clock_gettime(CLOCK_MONOTONIC, &j->t0);
	j->prev = NULL;
	j->next = m->running;
	if (m->running)
		m->running->prev = j;
	m->running = j;
	m->active++;
	return 0;
}

static void transport_unknown(struct gw_job *j, CURLcode rc, long timeout_ms)
{
	const char *why = j->errbuf[0] ? j->errbuf : curl_easy_strerror(rc);

	switch (rc) {
	case CURLE_OPERATION_TIMEDOUT:
		unknown(&j->res, "timeout after %ld ms: %s", timeout_ms, why);
		break;
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST:
		unknown(&j->res, "cannot connect: %s", why);
		break;
	case CURLE_GOT_NOTHING:
		unknown(&j->res, "connection closed without a response");
		break;
	case CURLE_SEND_FAIL_REWIND:
		unknown(&j->res, "connection lost after the request was sent (not resent)");
		break;
	case CURLE_PARTIAL_FILE:
		unknown(&j->res, "truncated response: %s", why);
		break;
	case CURLE_WRITE_ERROR:
		if (j->resp_too_big) {
			unknown(&j->res, "response longer than %d bytes", GW_MAX_RESPONSE);
			break;
		}
		/* fall through */
	default:
		unknown(&j->res, "connection lost: %s", why);
	}
}

static double seconds_since(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

static void job_finish(struct gw_multi *m, struct gw_job *j, CURLcode rc)
{
	long status = 0;

	curl_easy_getinfo(j->easy, CURLINFO_RESPONSE_CODE, &status);
	if (rc == CURLE_OK) {
		gw_classify(&j->req, status, j->resp, j->resp_len, &j->res);
	} else {
		result_reset(&j->res);
		j->res.http_status = status;
		transport_unknown(j, rc, m->c->cfg.timeout_ms);
	}
	j->res.seconds = seconds_since(&j->t0);
	j->done(j->udata, &j->res);
	job_free(j);
}

/* Moves queued requests into free slots. A request that cannot even be
 * handed to libcurl has sent nothing: it completes as GW_INVALID. */
static int start_queued(struct gw_multi *m)
{
	int failed = 0;

	while (m->active < m->max && m->qhead) {
		struct gw_job *j = m->qhead;

		m->qhead = j->next;
		if (!m->qhead)
			m->qtail = NULL;
		if (job_start(m, j) == 0)
			continue;
		if (j->easy)
			curl_multi_remove_handle(m->cm, j->easy);
		m->pending--;
		result_reset(&j->res);
		j->res.outcome = GW_INVALID;
		detailf(j->res.detail, sizeof(j->res.detail), "cannot start a transfer");
		j->done(j->udata, &j->res);
		job_free(j);
		failed++;
	}
	return failed;
}

static int reap(struct gw_multi *m)
{
	CURLMsg *msg;
	int left, n = 0;

	while ((msg = curl_multi_info_read(m->cm, &left))) {
		CURL *e = msg->easy_handle;
		CURLcode rc = msg->data.result;
		struct gw_job *j = NULL;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&j);
		curl_multi_remove_handle(m->cm, e);
		if (j->prev)
			j->prev->next = j->next;
		else
			m->running = j->next;
		if (j->next)
			j->next->prev = j->prev;
		m->active--;
		m->pending--;
		job_finish(m, j, rc);
		n++;
	}
	return n;
}

struct gw_multi *gw_multi_new(struct gw_client *c, int max_in_flight)
{
	struct gw_multi *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	m->c = c;
	m->max = max_in_flight > 0 ? max_in_flight : 1;
	m->cm = curl_multi_init();
	m->share = curl_share_init();
	if (!m->cm || !m->share ||
	    curl_share_setopt(m->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) !=
	        CURLSHE_OK ||
	    curl_share_setopt(m->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) != CURLSHE_OK ||
	    /* keep every connection of a full window alive for reuse */
	    curl_multi_setopt(m->cm, CURLMOPT_MAXCONNECTS, (long)m->max) != CURLM_OK ||
	    curl_multi_setopt(m->cm, CURLMOPT_MAX_HOST_CONNECTIONS, (long)m->max) != CURLM_OK) {
		gw_multi_free(m);
		return NULL;
	}
	return m;
}

void gw_multi_free(struct gw_multi *m)
{
	struct gw_job *j, *next;

	if (!m)
		return;
	for (j = m->running; j; j = next) {
		next = j->next;
		curl_multi_remove_handle(m->cm, j->easy);
		job_free(j);
	}
	for (j = m->qhead; j; j = next) {
		next = j->next;
		job_free(j);
	}
	if (m->cm)
		curl_multi_cleanup(m->cm);
	if (m->share)
		curl_share_cleanup(m->share);
	free(m);
}

int gw_multi_submit(struct gw_multi *m, const struct gw_request *req, gw_done_fn done, void *udata,
                    struct gw_result *res)
{
	char detail[256];
	struct gw_job *j = calloc(1, sizeof(*j));

	if (j)
		j->body = build_body(m->c, req, detail, sizeof(detail));
	else
		detailf(detail, sizeof(detail), "out of memory");
	if (!j || !j->body) {
		free(j);
		if (res) {
			result_reset(res);
			res->outcome = GW_INVALID;
			copy_line(res->detail, sizeof(res->detail), detail);
		}
		return GW_INVALID;
	}
	j->body_len = strlen(j->body);
	j->req.call = req->call;
	/* the ids gw_classify checks the answer against */
	if (present(req->mch_order_no)) {
		snprintf(j->mch_order_no, sizeof(j->mch_order_no), "%s", req->mch_order_no);
		j->req.mch_order_no = j->mch_order_no;
	}
	if (present(req->pay_order_id)) {
		snprintf(j->pay_order_id, sizeof(j->pay_order_id), "%s", req->pay_order_id);
		j->req.pay_order_id = j->pay_order_id;
	}
	j->done = done;
	j->udata = udata;
	if (m->qtail)
		m->qtail->next = j;
	else
		m->qhead = j;
	m->qtail = j;
	m->pending++;
	return 0;
}

int gw_multi_pending(const struct gw_multi *m)
{
	return m->pending;
}

static long ms_until(const struct timespec *deadline)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (deadline->tv_sec - t.tv_sec) * 1000 + (deadline->tv_nsec - t.tv_nsec) / 1000000;
}

int gw_multi_run(struct gw_multi *m, int timeout_ms)
{
	struct timespec deadline;
	int completed = 0, running;
	long left;

	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += timeout_ms / 1000;
	deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
	if (deadline.tv_nsec >= 1000000000) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000;
	}
	for (;;) {
		completed += start_queued(m);
		if (m->active == 0)
			break;
		if (curl_multi_perform(m->cm, &running) != CURLM_OK)
			return -1;
		completed += reap(m);
		left = ms_until(&deadline);
		if (completed > 0 || left <= 0)
			break;
		if (curl_multi_poll(m->cm, NULL, 0, left > 1000 ? 1000 : (int)left, NULL) !=
		    CURLM_OK)
			return -1;
	}
	/* hand freed slots (and requests that done submitted) to libcurl now,
	 * so they travel while the caller handles the results */
	if (completed > 0 && m->qhead) {
		completed += start_queued(m);
		if (curl_multi_perform(m->cm, &running) != CURLM_OK)
			return -1;
	}
	return completed;
}

/* ---- the client ---- */

static int client_check(const struct cfg_gateway *g, char *err, size_t errlen)
{
	char detail[256];

	if (strncmp(g->base_url, "http://", 7) != 0 && strncmp(g->base_url, "https://", 8) != 0) {
		snprintf(err, errlen, "gateway.base_url: expected an http:// or https:// URL");
		return -1;
	}
	if (!g->mch_id[0] || check_text("gateway.mch_id", g->mch_id, 30, detail, sizeof(detail))) {
		snprintf(err, errlen, "%s", g->mch_id[0] ? detail : "gateway.mch_id: required");
		return -1;
	}
	if (!g->job_no[0] || check_text("gateway.job_no", g->job_no, 12, detail, sizeof(detail))) {
		snprintf(err, errlen, "%s", g->job_no[0] ? detail : "gateway.job_no: required");
		return -1;
	}
	if (!g->merchant_key[0]) {
		snprintf(err, errlen, "gateway: no merchant key");
		return -1;
	}
	if (g->timeout_ms <= 0) {
		snprintf(err, errlen, "gateway.timeout_ms: must be positive");
		return -1;
	}
	return 0;
}

struct gw_client *gw_client_new(const struct cfg_gateway *gc, char *err, size_t errlen)
{
	struct gw_client *c;
	size_t blen = strlen(gc->base_url);

	if (client_check(gc, err, errlen) < 0)
		return NULL;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		snprintf(err, errlen, "gateway: libcurl initialisation failed");
		return NULL;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		curl_global_cleanup();
		snprintf(err, errlen, "gateway: out of memory");
		return NULL;
	}
	c->cfg = *gc;
	while (blen > 0 && gc->base_url[blen - 1] == '/')
		blen--;
	for (int i = 0; i < NCALLS; i++)
		snprintf(c->url[i], sizeof(c->url[i]), "%.*s/%s", (int)blen, gc->base_url,
		         calls[i].endpoint);
	c->headers = curl_slist_append(NULL, "Content-Type: application/json;charset=UTF-8");
	if (c->headers)
		c->headers = curl_slist_append(c->headers, "Accept: application/json");
	/* no "Expect: 100-continue" round trip before the body */
	if (c->headers)
		c->headers = curl_slist_append(c->headers, "Expect:");
	if (!c->headers) {
		gw_client_free(c);
		snprintf(err, errlen, "gateway: out of memory");
		return NULL;
	}
	return c;
}

void gw_client_free(struct gw_client *c)
{
	if (!c)
		return;
	gw_multi_free(c->sync);
	curl_slist_free_all(c->headers);
	OPENSSL_cleanse(c->cfg.merchant_key, sizeof(c->cfg.merchant_key));
	free(c);
	curl_global_cleanup();
}

static void sync_done(void *udata, const struct gw_result *res)
{
	*(struct gw_result *)udata = *res;
}

enum gw_outcome gw_call(struct gw_client *c, const struct gw_request *req, struct gw_result *res)
{
	if (!c->sync)
		c->sync = gw_multi_new(c, 1);
	if (!c->sync) {
		result_reset(res);
		res->outcome = GW_INVALID;
		detailf(res->detail, sizeof(res->detail), "out of memory");
		return GW_INVALID;
	}
	if (gw_multi_submit(c->sync, req, sync_done, res, res) == GW_INVALID)
		return GW_INVALID;
	while (gw_multi_pending(c->sync) > 0) {
		if (gw_multi_run(c->sync, 1000) < 0) {
			/* the request may be on the wire: abandon it, as unknown */
			gw_multi_free(c->sync);
			c->sync = NULL;
			result_reset(res);
			return unknown(res, "internal libcurl error");
		}
	}
	return res->outcome;
}

/* ---- signed messages from the gateway ---- */

static int hexval(int ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* URL-decodes s[0..n) into out ('+' is a space); returns the bytes written
 * (plus a NUL), -1 on a bad or NUL escape. */
static long url_decode(const char *s, size_t n, char *out)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		if (s[i] == '%') {
			int hi = i + 2 < n ? hexval((unsigned char)s[i + 1]) : -1;
			int lo = i + 2 < n ? hexval((unsigned char)s[i + 2]) : -1;

			if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
				return -1;
			out[o++] = (char)(hi * 16 + lo);
			i += 2;
		} else {
			out[o++] = s[i] == '+' ? ' ' : s[i];
		}
	}
	out[o] = '\0';
	return (long)o;
}

static int fields_add(struct gw_fields *f, const char *key, const char *value, char *err,
                      size_t errlen)
{
	if (!key[0]) {
		snprintf(err, errlen, "a field without a name");
		return -1;
	}
	if (f->n == GW_MAX_FIELDS) {
		snprintf(err, errlen, "more than %d fields", GW_MAX_FIELDS);
		return -1;
	}
	/* a second value for a key could be signed one way and read another */
	if (gw_fields_get(f, key)) {
		snprintf(err, errlen, "field %.40s appears twice", key);
		return -1;
	}
	f->kv[f->n].key = key;
	f->kv[f->n].value = value;
	f->n++;
	return 0;
}

int gw_fields_from_query(const char *qs, struct gw_fields *f, char *err, size_t errlen)
{
	size_t len;
	char *out;

	memset(f, 0, sizeof(*f));
	if (!qs) {
		snprintf(err, errlen, "no query string");
		return -1;
	}
	if (*qs == '?')
		qs++;
	len = strnlen(qs, GW_MAX_INPUT + 1);
	if (len > GW_MAX_INPUT) {
		snprintf(err, errlen, "query string longer than %d bytes", GW_MAX_INPUT);
		return -1;
	}
	/* decoding never grows: "k=v" becomes "k\0v\0" */
	f->buf = out = malloc(len + 2);
	if (!f->buf) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (const char *p = qs; *p;) {
		const char *end = strchrnul(p, '&');
		const char *eq = memchr(p, '=', (size_t)(end - p));
		const char *key = out, *value = "";
		long k;

		if (end == p) { /* "a=1&&b=2" or a trailing '&' */
			p++;
			continue;
		}
		k = url_decode(p, (size_t)((eq ? eq : end) - p), out);
		if (k < 0)
			goto bad;
		out += k + 1;
		if (eq) {
			value = out;
			k = url_decode(eq + 1, (size_t)(end - eq - 1), out);
			if (k < 0)
				goto bad;
			out += k + 1;
		}
		if (fields_add(f, key, value, err, errlen) < 0)
			goto fail;
		p = *end ? end + 1 : end;
	}
	return 0;
bad:
	snprintf(err, errlen, "bad %%-escape in query string");
fail:
	gw_fields_free(f);
	return -1;
}

int gw_fields_from_json(const char *body, size_t len, struct gw_fields *f, char *err, size_t errlen)
{
	char nums[GW_MAX_FIELDS][32];
	const char *text[GW_MAX_FIELDS];
	const cJSON *it;
	cJSON *j;
	size_t need = 0;
	int n = 0;
	char *out;

	memset(f, 0, sizeof(*f));
	if (len > GW_MAX_INPUT) {
		snprintf(err, errlen, "message longer than %d bytes", GW_MAX_INPUT);
		return -1;
	}
	j = body ? parse_object(body, len) : NULL;
	if (!j) {
		snprintf(err, errlen, "not a JSON object");
		return -1;
	}
	cJSON_ArrayForEach(it, j)
	{
		if (n == GW_MAX_FIELDS) {
			snprintf(err, errlen, "more than %d fields", GW_MAX_FIELDS);
			goto fail;
		}
		if (cJSON_IsString(it))
			text[n] = it->valuestring;
		else if (cJSON_IsNumber(it))
			text[n] = (num_text(it->valuedouble, nums[n]), nums[n]);
		else if (cJSON_IsBool(it))
			text[n] = cJSON_IsTrue(it) ? "true" : "false";
		else if (cJSON_IsNull(it))
			text[n] = "";
		else {
			snprintf(err, errlen, "field %.40s is not a string or number", it->string);
			goto fail;
		}
		need += strlen(it->string) + strlen(text[n]) + 2;
		n++;
	}
	f->buf = out = malloc(need + 1);
	if (!f->buf) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	n = 0;
	cJSON_ArrayForEach(it, j)
	{
		const char *key = out, *value;

		out = stpcpy(out, it->string) + 1;
		value = out;
		out = stpcpy(out, text[n++]) + 1;
		if (fields_add(f, key, value, err, errlen) < 0)
			goto fail;
	}
	cJSON_Delete(j);
	return 0;
fail:
	cJSON_Delete(j);
	gw_fields_free(f);
	return -1;
}

void gw_fields_free(struct gw_fields *f)
{
	free(f->buf);
	f->buf = NULL;
	f->n = 0;
}

const char *gw_fields_get(const struct gw_fields *f, const char *key)
{
	for (int i = 0; i < f->n; i++)
		if (strcmp(f->kv[i].key, key) == 0)
			return f->kv[i].value;
	return NULL;
}

int gw_fields_verify(const struct gw_fields *f, const char *merchant_key)
{
	const char *sig = gw_fields_get(f, "sign");

	if (!sig || !merchant_key || !merchant_key[0])
		return 0;
	return sign_verify(f->kv, (size_t)f->n, merchant_key, sig);
}
