/* paylink.h: one-off payment links (cc_purchase): the charge intent, with a
 * mchOrderNo derived from our own records, is committed before the gateway
 * makes the hosted payment page; the listener's notify marks it paid. */
#ifndef PAYLINK_H
#define PAYLINK_H

#include <stddef.h>
#include <stdint.h>
#include <libpq-fe.h>

#include "config.h"
#include "gateway.h"

struct paylink {
	int64_t charge_id;
	char mch_order_no[31]; /* order_prefix "P" charge id */
	char pay_url[1024];
};

/* Commits a kind='one_off' charge of amount cents for the existing customer
 * customer_id, then calls cc_purchase with notifyUrl = the origin of
 * cfg->return_url + "/iotpay/notify" and returnUrl = cfg->success_url.
 * GW_SUCCESS fills out->pay_url; GW_FAIL (refused: the charge is marked
 * failed) and GW_UNKNOWN (no page to hand out: the charge stays pending and
 * reconciliation checks it) come with err; -1 with err when nothing was
 * sent (unknown customer, bad amount, configuration, database). now: the
 * billing clock, dating a refusal. */
int paylink_create(PGconn *c, struct gw_client *gw, const struct cfg *cfg, const char *customer_id,
                   int64_t amount, int64_t now, struct paylink *out, char *err, size_t errlen);

#endif
