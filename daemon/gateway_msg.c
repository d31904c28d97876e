/* gateway_msg.c: the signed messages the gateway sends us (a notify's JSON
 * body, the card page's returnUrl query string): parsed into fields and
 * verified against our merchant key before anything reads them. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "gateway_impl.h"

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
		char name[41];

		gw_copy_line(name, sizeof(name), key);
		snprintf(err, errlen, "field %s appears twice", name);
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

/* Appends the '&'- or '?'-separated pairs of s not seen yet to seg[0..*n). */
static int add_pairs(const char *s, const char **seg, size_t *seglen, int *n)
{
	while (*s) {
		size_t k = strcspn(s, "&?");
		int i;

		for (i = 0; i < *n && (seglen[i] != k || memcmp(seg[i], s, k) != 0); i++)
			;
		if (k && i == *n) {
			if (*n == 2 * GW_MAX_FIELDS)
				return -1;
			seg[*n] = s;
			seglen[(*n)++] = k;
		}
		s += k + (s[k] != '\0');
	}
	return 0;
}

/* The gateway's signed fields out of the return's query string. The
 * returnUrl we gave cc_adduser is enrolment.return_url (which may have a
 * query of its own) plus customerId=<id>, and the gateway appends its signed
 * fields (customerId again) with '&', or with a second '?'. So '?' separates
 * too (the gateway's values never hold one unescaped), the pairs of
 * return_url's own query are dropped, and so are exact repeats; any other
 * extra or altered pair still fails the signature. */
static int signed_query(const char *return_url, const char *raw, char *out, size_t len)
{
	const char *seg[2 * GW_MAX_FIELDS], *ours = strchr(return_url, '?');
	size_t seglen[2 * GW_MAX_FIELDS], at = 0;
	int n = 0, first, i;

	if (ours && add_pairs(ours + 1, seg, seglen, &n) < 0)
		return -1;
	first = n;
	if (add_pairs(raw, seg, seglen, &n) < 0)
		return -1;
	for (i = first; i < n; i++) {
		if (at + seglen[i] + 2 > len)
			return -1;
		if (i > first)
			out[at++] = '&';
		memcpy(out + at, seg[i], seglen[i]);
		at += seglen[i];
	}
	out[at] = '\0';
	return 0;
}

int gw_fields_from_return(const char *raw, const char *return_url, struct gw_fields *f, char *err,
                          size_t errlen)
{
	char q[GW_MAX_INPUT + 1];

	if (strlen(raw) > GW_MAX_INPUT || signed_query(return_url, raw, q, sizeof(q)) < 0) {
		snprintf(err, errlen, "query string: too long or too many fields");
		return -1;
	}
	return gw_fields_from_query(q, f, err, errlen);
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
	j = body ? gw_parse_object(body, len) : NULL;
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
			text[n] = (gw_num_text(it->valuedouble, nums[n]), nums[n]);
		else if (cJSON_IsBool(it))
			text[n] = cJSON_IsTrue(it) ? "true" : "false";
		else if (cJSON_IsNull(it))
			text[n] = "";
		else {
			char name[41];

			gw_copy_line(name, sizeof(name), it->string);
			snprintf(err, errlen, "field %s is not a string or number", name);
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

static const char *field(const struct gw_fields *f, const char *key)
{
	const char *v = gw_fields_get(f, key);
	return v ? v : "";
}

void gw_return_read(const struct gw_fields *f, struct gw_return *out)
{
	out->customer_id = field(f, "customerId");
	out->card = field(f, "cardNumber");
	out->card_type = field(f, "cardType");
	out->expiry = field(f, "expirationDate");
	out->result = field(f, "retCode");
	out->success = strcmp(out->result, "SUCCESS") == 0 ? 1
	               : strcmp(out->result, "FAIL") == 0  ? 0
	                                                   : -1;
}

static int read_int(const char *s, long long *v)
{
	char *end;

	if (!*s)
		return -1;
	errno = 0;
	*v = strtoll(s, &end, 10);
	return errno == 0 && *end == '\0' ? 0 : -1;
}

int gw_notify_read(const struct gw_fields *f, struct gw_notify *out)
{
	long long status = -1;
	int bad;

	out->mch_id = field(f, "mchId");
	out->mch_order_no = field(f, "mchOrderNo");
	out->pay_order_id = field(f, "payOrderId");
	out->trans_id = field(f, "transId");
	out->pay_succ_time = field(f, "paySuccTime");
	out->status_text = field(f, "status");
	out->amount_text = field(f, "amount");
	bad = read_int(out->amount_text, &out->amount) < 0 ||
	      read_int(out->status_text, &status) < 0 || status < -1 || status > 99;
	out->status = (int)status;
	return bad || !out->mch_order_no[0] || !out->pay_order_id[0] ||
	               strcmp(field(f, "currency"), "CAD") != 0
	           ? -1
	           : 0;
}

const char *gw_notify_answer(int ok)
{
	return ok ? "SUCCESS" : "FAIL";
}
