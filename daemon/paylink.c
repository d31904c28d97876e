/* paylink.c: one-off payment links. The charge row, whose mchOrderNo
 * (order_prefix "P" id) is derived from our own id so that reconciliation can
 * always find it, is committed before cc_purchase is sent. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "charges.h"
#include "paylink.h"

#define GW_URL_MAX 200 /* notifyUrl and returnUrl are String(200) */

/* The origin (scheme://host[:port]) of url followed by path, into out. */
static int url_at_origin(const char *url, const char *path, char *out, size_t len, char *err,
                         size_t errlen)
{
	const char *host = strstr(url, "://");
	size_t origin;
	int n;

	if (!host || host == url || host[3] == '\0' || host[3] == '/') {
		snprintf(err, errlen, "'%s' is not an absolute URL (scheme://host/...)", url);
		return -1;
	}
	origin = (size_t)(host + 3 - url) + strcspn(host + 3, "/?#");
	n = snprintf(out, len, "%.*s%s", (int)origin, url, path);
	if (n < 0 || (size_t)n >= len) {
		snprintf(err, errlen, "%.*s%s is longer than %zu characters", (int)origin, url,
		         path, len - 1);
		return -1;
	}
	return 0;
}

int paylink_create(PGconn *c, struct gw_client *gw, const struct cfg *cfg, const char *customer_id,
                   int64_t amount, int64_t now, struct paylink *out, char *err, size_t errlen)
{
	char notify[GW_URL_MAX + 1];
	struct gw_request req = {0};
	struct gw_result res;
	enum gw_outcome o;

	memset(out, 0, sizeof(*out));
	if (amount <= 0 || amount > INT32_MAX) {
		snprintf(err, errlen, "amount %" PRId64 " cents is out of range (1 to %d)", amount,
		         INT32_MAX);
		return -1;
	}
	/* Checked before the intent, so that a bad configuration leaves nothing. */
	if (cfg->return_url[0] == '\0' || cfg->success_url[0] == '\0') {
		snprintf(err, errlen, "enrolment.return_url and enrolment.success_url must be set");
		return -1;
	}
	if (url_at_origin(cfg->return_url, "/iotpay/notify", notify, sizeof(notify), err, errlen) <
	    0)
		return -1;
	if (strlen(cfg->success_url) > GW_URL_MAX) {
		snprintf(err, errlen,
		         "enrolment.success_url is longer than the gateway's %d characters",
		         GW_URL_MAX);
		return -1;
	}
	if (charges_create_link(c, cfg->order_prefix, customer_id, amount, &out->charge_id,
	                        out->mch_order_no, sizeof(out->mch_order_no), err, errlen) < 0)
		return -1;

	req.call = GW_PURCHASE;
	req.mch_order_no = out->mch_order_no;
	req.customer_id = customer_id;
	req.amount = (long)amount;
	req.subject = "Payment";
	req.notify_url = notify;
	req.return_url = cfg->success_url;
	o = gw_call(gw, &req, &res);
	if (o == GW_SUCCESS && res.pay_url[0]) {
		snprintf(out->pay_url, sizeof(out->pay_url), "%s", res.pay_url);
		return GW_SUCCESS;
	}
	if (o == GW_FAIL || o == GW_INVALID) {
		/* Refused, or never sent: no page exists, so nothing can be paid. */
		const char *why = o == GW_FAIL ? res.ret_msg : res.detail;
		char dberr[256];

		if (charges_mark_failed(c, out->charge_id, why, now, dberr, sizeof(dberr)) < 0)
			snprintf(err, errlen,
			         "cc_purchase %s refused (%s); recording it failed: %s",
			         out->mch_order_no, why, dberr);
		else
			snprintf(err, errlen, "cc_purchase %s refused: %s", out->mch_order_no, why);
		return GW_FAIL;
	}
	snprintf(err, errlen,
	         "cc_purchase %s: outcome unknown (%s); no payment page to hand out: the charge "
	         "stays pending and billctl reconcile checks it",
	         out->mch_order_no, res.detail[0] ? res.detail : res.ret_msg);
	return GW_UNKNOWN;
}
