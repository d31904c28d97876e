/* gateway.c: the IOTPay Credit Card API V2 as requests and responses: the
 * only file that knows IOTPay's fields, retCode and retMsg wording and order
 * status numbers.
 *
 * Every call ends in one of four outcomes (gateway.h). The rule that governs
 * everything here: a request whose fate we cannot prove is GW_UNKNOWN, never
 * GW_FAIL, because a FAIL lets the caller charge again. Requests are
 * validated (API field limits) before anything is sent and signed (sign.h);
 * gateway_transfer.c sends them, and each response is classified here by
 * gw_classify. */
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "gateway_impl.h"
#include "utf8.h"

#define GW_MAX_AMOUNT 2147483647L /* the API's Int */

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

const char *gw_endpoint(enum gw_call call)
{
	return calls[call].endpoint;
}

int gw_order_holds_charge(const struct gw_order *o, int reversed)
{
	return reversed || gw_order_paid(o);
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

/* IOTPay's order status: 0 created, 1 paying, 2 paid, 3 paid and settled;
 * anything else is final without payment. */
enum gw_order_state gw_status_state(int status)
{
	if (status == 2 || status == 3)
		return GW_ORDER_PAID;
	return status <= 1 ? GW_ORDER_OPEN : GW_ORDER_FAILED;
}

int gw_order_paid(const struct gw_order *o)
{
	return gw_status_state(o->status) == GW_ORDER_PAID;
}

/* Copies text made for one line of the log and of the database: control
 * characters become spaces, bytes that are not UTF-8 (a Latin-1 retMsg)
 * '?', and a character that does not fit is left out whole. */
void gw_copy_line(char *dst, size_t n, const char *src)
{
	const unsigned char *p = (const unsigned char *)(src ? src : "");
	size_t i = 0;

	while (*p) {
		int len = utf8_len(p);

		if (i + (size_t)(len ? len : 1) >= n)
			break;
		if (!len)
			dst[i++] = '?';
		else if (*p < 0x20 || *p == 0x7f)
			dst[i++] = ' ';
		else {
			memcpy(dst + i, p, (size_t)len);
			i += (size_t)len;
		}
		p += len ? len : 1;
	}
	if (n)
		dst[i] = '\0';
}

static void vdetailf(char *detail, size_t n, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
static void vdetailf(char *detail, size_t n, const char *fmt, va_list ap)
{
	char tmp[512];

	vsnprintf(tmp, sizeof(tmp), fmt, ap);
	gw_copy_line(detail, n, tmp);
}

void gw_detailf(char *detail, size_t n, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vdetailf(detail, n, fmt, ap);
	va_end(ap);
}

int gw_present(const char *s)
{
	return s && s[0];
}

/* A String(max): valid UTF-8, no control characters, at most max characters. */
int gw_check_text(const char *wire, const char *v, int max, char *detail, size_t dl)
{
	const unsigned char *p = (const unsigned char *)v;
	int chars = 0;

	while (*p) {
		int len = utf8_len(p);

		if (!len) {
			gw_detailf(detail, dl, "%s: not valid UTF-8", wire);
			return -1;
		}
		if (*p < 0x20 || *p == 0x7f) {
			gw_detailf(detail, dl, "%s: contains a control character", wire);
			return -1;
		}
		p += len;
		chars++;
	}
	if (chars > max) {
		gw_detailf(detail, dl, "%s: longer than %d characters", wire, max);
		return -1;
	}
	return 0;
}

static const char *field_value(const struct gw_request *req, const struct fspec *f)
{
	const char *v = *(const char *const *)((const char *)req + f->off);

	return gw_present(v) ? v : NULL;
}

static int validate(const struct gw_request *req, char *detail, size_t dl)
{
	const struct cspec *cs;

	if ((int)req->call < 0 || (int)req->call >= GW_NCALLS) {
		gw_detailf(detail, dl, "call: unknown call %d", (int)req->call);
		return -1;
	}
	cs = &calls[req->call];
	for (const struct fspec *f = cs->fields; f->wire; f++) {
		const char *v = field_value(req, f);

		if (!v && f->required) {
			gw_detailf(detail, dl, "%s: required", f->wire);
			return -1;
		}
		if (v && gw_check_text(f->wire, v, f->max, detail, dl) < 0)
			return -1;
	}
	if (req->call == GW_QUERY &&
	    gw_present(req->mch_order_no) == gw_present(req->pay_order_id)) {
		gw_detailf(detail, dl, "cc_query: takes exactly one of mchOrderNo and payOrderId");
		return -1;
	}
	if (cs->amount && req->amount <= 0) {
		gw_detailf(detail, dl, "%s: must be a positive number of cents", cs->amount);
		return -1;
	}
	if (cs->amount && req->amount > GW_MAX_AMOUNT) {
		gw_detailf(detail, dl, "%s: larger than %ld", cs->amount, GW_MAX_AMOUNT);
		return -1;
	}
	return 0;
}

/* Validates req and returns its signed JSON body (cJSON_free), or NULL with
 * detail filled. */
char *gw_build_body(const struct gw_client *c, const struct gw_request *req, char *detail,
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
	gw_detailf(detail, dl, "out of memory");
	return NULL;
}

void gw_result_reset(struct gw_result *res)
{
	memset(res, 0, sizeof(*res));
	res->order.status = -1;
	res->order.amount = -1;
}

enum gw_outcome gw_unknown(struct gw_result *res, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vdetailf(res->detail, sizeof(res->detail), fmt, ap);
	va_end(ap);
	res->outcome = GW_UNKNOWN;
	res->reason = GW_R_NONE;
	return GW_UNKNOWN;
}

/* A JSON number as the text the gateway signed it as ("2000", not "2000.0"). */
void gw_num_text(double d, char out[32])
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
cJSON *gw_parse_object(const char *body, size_t len)
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
		s = (gw_num_text(v->valuedouble, num), num);
	else if (v && !cJSON_IsNull(v))
		return -1;
	if (strlen(s) >= n)
		return -1;
	gw_copy_line(out, n, s);
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

static int says(const char *msg, const char *const *words)
{
	for (; *words; words++)
		if (strcasestr(msg, *words))
			return 1;
	return 0;
}

/* The gateway's FAIL wording, read once. */
static enum gw_reason fail_reason(const char *msg)
{
	static const char *const not_found[] = {"not exist", "not found", NULL};
	static const char *const auth[] = {"sign error", "mchId error", NULL};
	static const char *const busy[] = {"busy", NULL};
	static const char *const not_bound[] = {"bind", "bound", NULL};
	static const char *const invalid[] = {"missing", "invalid", NULL};
	static const char *const declined[] = {"declin", "insufficient", "expired", "honor",
	                                       "honour", "lost",         "stolen",  "limit",
	                                       "fraud",  "restricted",   "card",    NULL};

	if (says(msg, auth))
		return GW_R_AUTH;
	if (says(msg, busy))
		return GW_R_BUSY;
	if (says(msg, not_found))
		return GW_R_NOT_FOUND;
	if (says(msg, not_bound))
		return GW_R_NOT_BOUND;
	if (says(msg, invalid))
		return GW_R_INVALID;
	return says(msg, declined) ? GW_R_DECLINED : GW_R_UNFAMILIAR;
}

/* cc_isbinding FAIL messages that are not a "no": try-later and errors in
 * the request itself (then the binding was never looked at). */
static int isbinding_unanswered(const struct gw_result *res)
{
	static const char *const later[] = {"try again",    "timeout",        "timed out",
	                                    "system error", "internal error", NULL};

	return res->reason == GW_R_BUSY || res->reason == GW_R_AUTH || says(res->ret_msg, later);
}

/* A refusal saying that our order (or refund) number is taken: the
 * gateway already has an order under it. */
static int says_number_taken(const char *msg)
{
	static const char *const taken[] = {"duplicate", "already exist", "already used", NULL};

	return says(msg, taken);
}

/* A FAIL that is not an answer is unknown; one the gateway did not process
 * (busy, our key or mch_id refused) keeps that reason. */
static enum gw_outcome unprocessed(struct gw_result *res, const char *fmt, const char *msg)
    __attribute__((format(printf, 2, 0)));
static enum gw_outcome unprocessed(struct gw_result *res, const char *fmt, const char *msg)
{
	enum gw_reason why = res->reason;

	gw_unknown(res, fmt, msg);
	if (why == GW_R_AUTH || why == GW_R_BUSY)
		res->reason = why;
	return GW_UNKNOWN;
}

static enum gw_outcome classify_fail(const struct gw_request *req, struct gw_result *res)
{
	const char *msg = res->ret_msg;
	const char *our_no = req->call == GW_REFUND || req->call == GW_VOID ? req->mch_refund_no
	                     : req->call == GW_PURCHASE || req->call == GW_PURCHASE_TOKEN
	                         ? req->mch_order_no
	                         : NULL;

	/* Our numbers are derived from our records, so after a restore one is
	 * sent again: its refusal is evidence of an order (maybe paid), never a
	 * decline. */
	if (our_no && says_number_taken(msg))
		return gw_unknown(res,
		                  "the gateway already has an order %s (%s): resolve with "
		                  "cc_query",
		                  our_no, msg);
	res->reason = fail_reason(msg);

	/* A query FAIL proves absence only when it says so; anything else
	 * ("system busy", "sign error") proves nothing. */
	if (req->call == GW_QUERY && res->reason != GW_R_NOT_FOUND)
		return unprocessed(res, "cc_query FAIL does not prove the order absent: %s", msg);
	if (req->call == GW_ISBINDING && isbinding_unanswered(res))
		return unprocessed(res, "cc_isbinding FAIL is not an answer: %s", msg);
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
			return gw_unknown(res, "SUCCESS without a payUrl");
		if (strlen(url->valuestring) >= sizeof(res->pay_url))
			return gw_unknown(res, "payUrl longer than %zu bytes",
			                  sizeof(res->pay_url) - 1);
		gw_copy_line(res->pay_url, sizeof(res->pay_url), url->valuestring);
		break;
	case GW_ISBINDING:
		break;
	default:
		if (!cJSON_IsObject(order))
			return gw_unknown(res, "SUCCESS without an order");
		if (parse_order(order, &res->order, bad, sizeof(bad)) < 0)
			return gw_unknown(res, "order field %s is not a short string", bad);
		res->has_order = 1;
		/* an order that is not the one we asked about proves nothing */
		if ((req->call == GW_PURCHASE_TOKEN || req->call == GW_QUERY) &&
		    req->mch_order_no && res->order.mch_order_no[0] &&
		    strcmp(res->order.mch_order_no, req->mch_order_no))
			return gw_unknown(res, "order mchOrderNo %s is not the requested %s",
			                  res->order.mch_order_no, req->mch_order_no);
		if (req->call == GW_QUERY && gw_present(req->pay_order_id) &&
		    res->order.pay_order_id[0] &&
		    strcmp(res->order.pay_order_id, req->pay_order_id))
			return gw_unknown(res, "order payOrderId %s is not the requested %s",
			                  res->order.pay_order_id, req->pay_order_id);
		if (req->call != GW_QUERY && !gw_order_paid(&res->order))
			return gw_unknown(res, "SUCCESS with order status %d", res->order.status);
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

	gw_result_reset(res);
	res->http_status = http_status;
	if (http_status != 200)
		return gw_unknown(res, "HTTP status %ld", http_status);
	if (!body || len == 0)
		return gw_unknown(res, "empty response body");
	j = gw_parse_object(body, len);
	if (!j)
		return gw_unknown(res, "unparseable response body (%zu bytes)", len);
	code = cJSON_GetObjectItemCaseSensitive(j, "retCode");
	msg = cJSON_GetObjectItemCaseSensitive(j, "retMsg");
	if (cJSON_IsString(msg))
		gw_copy_line(res->ret_msg, sizeof(res->ret_msg), msg->valuestring);
	if (!cJSON_IsString(code))
		o = gw_unknown(res, "response without a retCode");
	else if (strcmp(code->valuestring, "FAIL") == 0)
		o = classify_fail(req, res);
	else if (strcmp(code->valuestring, "SUCCESS") == 0)
		o = classify_success(req, j, res);
	else
		o = gw_unknown(res, "unknown retCode \"%.32s\"", code->valuestring);
	cJSON_Delete(j);
	return o;
}

const char *gw_reason_name(enum gw_reason r)
{
	static const char *const names[] = {"none", "declined", "not_bound", "busy",
	                                    "auth", "invalid",  "not_found", "unfamiliar"};

	return (unsigned)r < sizeof(names) / sizeof(names[0]) ? names[r] : "none";
}

int gw_auth_error(const struct gw_result *res, char *err, size_t errlen)
{
	static const char *const mch[] = {"mchId", NULL};

	if (res->reason != GW_R_AUTH)
		return 0;
	if (says(res->ret_msg, mch))
		snprintf(err, errlen, "the gateway refused gateway.mch_id (mchId error)");
	else
		snprintf(err, errlen,
		         "the gateway refused the merchant key (sign error): check "
		         "gateway.merchant_key_file or IOTPAY_MERCHANT_KEY");
	return 1;
}
