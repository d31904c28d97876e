/* cmd_money.c: billctl charge, refund, void, pay-link and query: the verbs
 * that move money or ask the gateway about it. Each goes through the same
 * library code as the daemon (intent committed before the gateway call). */
#include <stdio.h>
#include <string.h>

#include "customers.h"
#include "db.h"
#include "failover.h"
#include "out.h"
#include "paylink.h"
#include "refunds.h"
#include "scheduler.h"
#include "subscriptions.h"

#define CHARGE_USAGE  "usage: billctl charge SUBSCRIPTION [--end-trial] [--dry-run]"
#define REFUND_USAGE  "usage: billctl refund PAY_ORDER_ID [--amount CENTS] [--dry-run]"
#define VOID_USAGE    "usage: billctl void PAY_ORDER_ID [--dry-run]"
#define PAYLINK_USAGE "usage: billctl pay-link CUSTOMER AMOUNT_CENTS [--dry-run]"
#define DRY           "dry run, nothing sent: would "
#define QUERY_USAGE   "usage: billctl query --pay-order-id X | --mch-order-no Y"

/* The result line (or JSON) of a call whose outcome is o. */
static int report_outcome(struct cli *ctx, cJSON *j, enum gw_outcome o, const char *line)
{
	cJSON_AddStringToObject(j, "outcome", gw_outcome_name(o));
	if (ctx->json)
		out_json(j);
	else {
		puts(line);
		cJSON_Delete(j);
	}
	return o == GW_SUCCESS ? CLI_OK : CLI_FAIL;
}

/* charge --dry-run: what is owed, made due in a transaction rolled back. */
static int charge_dry(struct cli *ctx, int64_t id, int end_trial)
{
	struct subscription sub;
	char err[512], money[32], at[64];
	PGconn *db;
	int n;

	if (!(db = cli_db(ctx)))
		return CLI_FAIL;
	if (db_begin(db, err, sizeof(err)) < 0)
		return out_fail(err);
	n = subscriptions_make_due(db, id, ctx->now, end_trial, err, sizeof(err));
	if (n == 0)
		subscriptions_why_not_due(db, id, err, sizeof(err));
	if (n > 0 && subscriptions_get(db, id, &sub, err, sizeof(err)) < 0)
		n = -1;
	db_rollback(db);
	if (n <= 0)
		return out_fail(err);
	out_money(sub.amount_cents, money, sizeof(money));
	out_time(ctx->now, at, sizeof(at));
	if (ctx->json) {
		cJSON *j = cJSON_CreateObject();
		out_json_add(j, "dry_run:b subscription:I customer_id:s period:i amount:m at:t", 1,
		             id, sub.customer_id, sub.period, sub.amount_cents, ctx->now);
		out_json(j);
	} else
		printf(DRY "charge subscription %lld (customer %s) %s CAD for period %d at %s%s\n",
		       (long long)id, sub.customer_id, money, sub.period, at,
		       end_trial && strcmp(sub.state, "trialing") == 0 ? ", ending its trial" : "");
	return CLI_OK;
}

int cmd_charge(struct cli *ctx, int argc, char **argv)
{
	const char *pos[1];
	int end_trial = 0, dry = 0;
	const struct out_opt opts[] = {
	    {"--end-trial", NULL, &end_trial}, {"--dry-run", NULL, &dry}, {0}};
	char mch[64], err[512], line[700];
	struct gw_client *gw;
	struct sched *s;
	struct db_identity server;
	int64_t id;
	PGconn *db;
	cJSON *j;
	int o;

	if (out_args(argc, argv, 1, opts, pos, 1, 1, CHARGE_USAGE) < 0 ||
	    out_parse_id("subscription", pos[0], &id) < 0)
		return CLI_USAGE;
	if (dry)
		return charge_dry(ctx, id, end_trial);
	if (out_connect(ctx, &db, &gw) < 0)
		return CLI_FAIL;
	/* on a server whose history changed, asked with cc_query first, as
	 * billingd does (failover.h) */
	if ((o = failover_check(db, &server, err, sizeof(err))) < 0)
		return out_fail(err);
	s = sched_new(&ctx->cfg, db, gw, ctx->actor);
	if (!s) {
		cli_error("cannot start the charge protocol (out of memory)");
		return CLI_FAIL;
	}
	sched_set_probing(s, o);
	o = sched_charge_now(s, id, ctx->now, end_trial, mch, sizeof(mch), err, sizeof(err));
	sched_free(s);
	if (o == GW_INVALID)
		return out_fail(err);
	j = cJSON_CreateObject();
	out_json_add(j, "subscription:I mch_order_no:s message:s", id, mch, err);
	snprintf(line, sizeof(line), "charge %s: %s%s%s", mch,
	         o == GW_SUCCESS ? "succeeded"
	         : o == GW_FAIL  ? "declined"
	                         : "outcome unknown (recorded; resolved with cc_query before "
	                           "anything else is sent)",
	         err[0] && o != GW_SUCCESS ? ": " : "", o != GW_SUCCESS ? err : "");
	return report_outcome(ctx, j, (enum gw_outcome)o, line);
}

/* refund or void --dry-run: checked as it would be, nothing written. */
static int refund_dry(struct cli *ctx, const char *pay_order_id, int is_void, int64_t amount)
{
	char err[512], money[32];
	PGconn *db;

	if (!(db = cli_db(ctx)))
		return CLI_FAIL;
	if (refunds_preview(db, pay_order_id, is_void, &amount, err, sizeof(err)) < 0)
		return out_fail(err);
	out_money(amount, money, sizeof(money));
	if (ctx->json) {
		cJSON *j = cJSON_CreateObject();
		out_json_add(j, "dry_run:b type:s of_pay_order_id:s amount:m", 1,
		             is_void ? "void" : "refund", pay_order_id, amount);
		out_json(j);
	} else
		printf(DRY "%s %s CAD of %s\n", is_void ? "void" : "refund", money, pay_order_id);
	return CLI_OK;
}

static int refund_or_void(struct cli *ctx, int argc, char **argv, int is_void)
{
	const char *amount_s = NULL, *pos[1];
	int dry = 0;
	const struct out_opt opts[] = {
	    {"--amount", &amount_s, NULL}, {"--dry-run", NULL, &dry}, {0}};
	int64_t amount = 0;
	struct refund_row row;
	char err[512], line[800], money[32];
	struct gw_client *gw;
	PGconn *db;
	cJSON *j;
	int o;

	/* A void takes no --amount: its options start after it. */
	if (out_args(argc, argv, 1, is_void ? opts + 1 : opts, pos, 1, 1,
	             is_void ? VOID_USAGE : REFUND_USAGE) < 0 ||
	    (amount_s && out_parse_cents("--amount", amount_s, &amount) < 0))
		return CLI_USAGE;
	if (dry)
		return refund_dry(ctx, pos[0], is_void, amount);
	if (out_connect(ctx, &db, &gw) < 0)
		return CLI_FAIL;
	o = refunds_request(db, gw, ctx->cfg.order_prefix, pos[0], is_void, amount, ctx->now, &row,
	                    err, sizeof(err));
	if (o < 0)
		return out_fail(err);
	j = cJSON_CreateObject();
	out_json_add(j,
	             "type:s mch_refund_no:s of_pay_order_id:s amount_cents:I state:s "
	             "pay_order_id:s resolved_earlier:b message:s",
	             row.is_void ? "void" : "refund", row.mch_refund_no, pos[0], row.amount_cents,
	             row.state, row.pay_order_id, row.resolved_earlier, o == GW_SUCCESS ? "" : err);
	out_money(row.amount_cents, money, sizeof(money));
	if (o == GW_SUCCESS)
		snprintf(line, sizeof(line), "%s %s: %s CAD of %s succeeded (gateway order %s)%s",
		         row.is_void ? "void" : "refund", row.mch_refund_no, money, pos[0],
		         row.pay_order_id,
		         row.resolved_earlier ? "; it is the earlier request, whose outcome was "
		                                "unknown: nothing new was sent"
		                              : "");
	else
		snprintf(line, sizeof(line), "%s", err);
	if (o != GW_SUCCESS && !ctx->json) {
		cli_error("%s", line);
		cJSON_Delete(j);
		return CLI_FAIL;
	}
	return report_outcome(ctx, j, (enum gw_outcome)o, line);
}

int cmd_refund(struct cli *ctx, int argc, char **argv)
{
	return refund_or_void(ctx, argc, argv, 0);
}

int cmd_void(struct cli *ctx, int argc, char **argv)
{
	return refund_or_void(ctx, argc, argv, 1);
}

int cmd_paylink(struct cli *ctx, int argc, char **argv)
{
	const char *pos[2];
	int dry = 0;
	const struct out_opt opts[] = {{"--dry-run", NULL, &dry}, {0}};
	struct paylink pl;
	struct customer cu;
	int64_t amount;
	char err[512];
	struct gw_client *gw;
	PGconn *db;
	cJSON *j;
	int o;

	if (out_args(argc, argv, 1, opts, pos, 2, 2, PAYLINK_USAGE) < 0 ||
	    out_parse_cents("amount", pos[1], &amount) < 0)
		return CLI_USAGE;
	if (dry) {
		char money[32];
		if (!(db = cli_db(ctx)))
			return CLI_FAIL;
		if (customers_get(db, pos[0], &cu, err, sizeof(err)) < 0)
			return out_fail(err);
		out_money(amount, money, sizeof(money));
		j = cJSON_CreateObject();
		out_json_add(j, "dry_run:b customer_id:s amount:m", 1, pos[0], amount);
		if (ctx->json)
			out_json(j);
		else {
			printf(DRY "create a payment link of %s CAD for customer %s\n", money,
			       pos[0]);
			cJSON_Delete(j);
		}
		return CLI_OK;
	}
	if (out_connect(ctx, &db, &gw) < 0)
		return CLI_FAIL;
	o = paylink_create(db, gw, &ctx->cfg, pos[0], amount, ctx->now, &pl, err, sizeof(err));
	if (o != GW_SUCCESS)
		return out_fail(err);
	j = cJSON_CreateObject();
	out_json_add(j, "customer_id:s amount_cents:I mch_order_no:s pay_url:s", pos[0], amount,
	             pl.mch_order_no, pl.pay_url);
	return report_outcome(ctx, j, GW_SUCCESS, pl.pay_url);
}

int cmd_query(struct cli *ctx, int argc, char **argv)
{
	const char *pay = NULL, *mch = NULL;
	const struct out_opt opts[] = {
	    {"--pay-order-id", &pay, NULL}, {"--mch-order-no", &mch, NULL}, {0}};
	struct gw_request req = {.call = GW_QUERY};
	struct gw_result res;
	const struct gw_order *o = &res.order;
	struct gw_client *gw;
	enum gw_outcome oc;
	cJSON *j;

	if (out_args(argc, argv, 1, opts, NULL, 0, 0, QUERY_USAGE) < 0)
		return CLI_USAGE;
	if (!pay == !mch) {
		cli_error("give one of --pay-order-id and --mch-order-no (%s)", QUERY_USAGE);
		return CLI_USAGE;
	}
	if (!(gw = cli_gw(ctx)))
		return CLI_FAIL;
	req.pay_order_id = pay;
	req.mch_order_no = mch;
	oc = gw_call(gw, &req, &res);
	if (oc == GW_FAIL) {
		cli_error("no such order at the gateway: %s", res.ret_msg);
		return CLI_FAIL;
	}
	if (oc != GW_SUCCESS || !res.has_order) {
		cli_error("cc_query: %s (%s)", res.detail[0] ? res.detail : res.ret_msg,
		          gw_outcome_name(oc));
		return CLI_FAIL;
	}
	if (!ctx->json) {
		printf("pay_order_id    %s\nmch_order_no    %s\ntrans_id        %s\n"
		       "status          %d%s\namount          %ld\npay_type        %s\n"
		       "original_order  %s\npay_succ_time   %s\n",
		       o->pay_order_id, o->mch_order_no, o->trans_id, o->status,
		       gw_order_paid(o) ? " (paid)" : "", o->amount, o->pay_type,
		       o->original_order_id, o->pay_succ_time);
		return CLI_OK;
	}
	j = cJSON_CreateObject();
	out_json_add(j,
	             "pay_order_id:s mch_order_no:s trans_id:s status:i amount_cents:I pay_type:s "
	             "original_order_id:s pay_succ_time:s",
	             o->pay_order_id, o->mch_order_no, o->trans_id, o->status, (int64_t)o->amount,
	             o->pay_type, o->original_order_id, o->pay_succ_time);
	out_json(j);
	return CLI_OK;
}
