/* cmd_subscription.c: billctl subscribe and subscription list|show|cancel|
 * pause|resume|change-plan: admins' changes to the subscriptions ledger. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "out.h"
#include "plans.h"
#include "billing.h"
#include "refunds.h"
#include "subscriptions.h"

#define SUBSCRIBE_USAGE "usage: billctl subscribe CUSTOMER PLAN [--start T] [--trial-days N]"
#define USAGE                                                                                      \
	"usage: billctl subscription list [--customer C] [--state S] | show ID | cancel ID "       \
	"[--at-period-end] | pause ID | resume ID | change-plan ID PLAN"

static cJSON *subscription_json(const void *item)
{
	const struct subscription *s = item;
	cJSON *o = cJSON_CreateObject();

	cJSON_AddNumberToObject(o, "id", (double)s->id);
	cJSON_AddStringToObject(o, "customer_id", s->customer_id);
	cJSON_AddStringToObject(o, "plan", s->plan_code);
	cJSON_AddNumberToObject(o, "plan_version", s->plan_version);
	out_json_money(o, s->amount_cents);
	if (s->next_plan_id)
		cJSON_AddStringToObject(o, "next_plan", s->next_plan_code);
	else
		cJSON_AddNullToObject(o, "next_plan");
	cJSON_AddStringToObject(o, "state", s->state);
	cJSON_AddBoolToObject(o, "cancel_at_period_end", s->cancel_at_period_end);
	cJSON_AddNumberToObject(o, "period", s->period);
	cJSON_AddNumberToObject(o, "attempts", s->attempts);
	cJSON_AddNumberToObject(o, "cycles_done", s->cycles_done);
	out_json_time(o, "anchor", s->anchor);
	out_json_time(o, "trial_end", s->trial_end);
	out_json_time(o, "period_start", s->period_start);
	out_json_time(o, "period_end", s->period_end);
	out_json_time(o, "next_charge_at", s->next_charge_at);
	out_json_time(o, "created_at", s->created_at);
	return o;
}

/* One line: what the subscription is now. */
static void print_summary(const struct subscription *s)
{
	char next[64], money[32];

	out_time(s->next_charge_at, next, sizeof(next));
	out_money(s->amount_cents, money, sizeof(money));
	printf("subscription %lld: %s on %s (v%d, %s CAD), %s%s, next charge %s%s%s\n",
	       (long long)s->id, s->customer_id, s->plan_code, s->plan_version, money, s->state,
	       s->cancel_at_period_end ? " (cancels at the period's end)" : "", next,
	       s->next_plan_id ? ", then plan " : "", s->next_plan_id ? s->next_plan_code : "");
}

static int print_result(struct cli *ctx, const struct subscription *s)
{
	if (ctx->json)
		out_json(subscription_json(s));
	else
		print_summary(s);
	return CLI_OK;
}

int cmd_subscribe(struct cli *ctx, int argc, char **argv)
{
	const char *start_s = NULL, *trial_s = NULL, *pos[2];
	const struct out_opt opts[] = {
	    {"--start", &start_s, NULL}, {"--trial-days", &trial_s, NULL}, {0}};
	int64_t start = ctx->now;
	int trial = -1;
	struct plan p;
	struct subscription s;
	char err[512];
	PGconn *db;

	if (out_args(argc, argv, 1, opts, pos, 2, 2, SUBSCRIBE_USAGE) < 0)
		return CLI_USAGE;
	if ((start_s && out_parse_time("--start", start_s, &start) < 0) ||
	    (trial_s && out_parse_int("--trial-days", trial_s, 0, 3650, &trial) < 0))
		return CLI_USAGE;
	if (!(db = cli_db(ctx)))
		return CLI_FAIL;
	if (plans_get_current(db, pos[1], &p, err, sizeof(err)) < 0 ||
	    subscriptions_create(db, pos[0], &p, start, trial >= 0 ? trial : p.trial_days, &s, err,
	                         sizeof(err)) < 0)
		return out_fail(err);
	return print_result(ctx, &s);
}

static int parse_id_arg(int argc, char **argv, const struct out_opt *opts, const char **pos,
                        int npos, int64_t *id)
{
	if (out_args(argc, argv, 2, opts, pos, npos, npos, USAGE) < 0 ||
	    out_parse_id("subscription", pos[0], id) < 0)
		return -1;
	return 0;
}

static int list(struct cli *ctx, int argc, char **argv)
{
	const char *customer = NULL, *state = NULL;
	const struct out_opt opts[] = {
	    {"--customer", &customer, NULL}, {"--state", &state, NULL}, {0}};
	const char *hdr[] = {"ID", "CUSTOMER", "PLAN", "AMOUNT", "STATE", "PERIOD", "NEXT CHARGE"};
	struct subscription *ss = NULL;
	struct out_table *t;
	char err[512];
	int n = 0;
	PGconn *db;

	if (out_args(argc, argv, 2, opts, NULL, 0, 0, USAGE) < 0)
		return CLI_USAGE;
	if (state && billing_state_parse(state) < 0) {
		cli_error("--state: '%s' is not one of trialing, active, past_due, paused, "
		          "canceled, ended",
		          state);
		return CLI_USAGE;
	}
	if (!(db = cli_db(ctx)))
		return CLI_FAIL;
	if (subscriptions_list(db, customer, state, &ss, &n, err, sizeof(err)) < 0)
		return out_fail(err);
	if (ctx->json) {
		out_json_list(ss, n, sizeof(*ss), subscription_json);
		free(ss);
		return CLI_OK;
	}
	t = out_table_new(7, hdr);
	for (int i = 0; i < n; i++) {
		char id[24], money[32], period[16], next[64];
		snprintf(id, sizeof(id), "%lld", (long long)ss[i].id);
		out_money(ss[i].amount_cents, money, sizeof(money));
		snprintf(period, sizeof(period), "%d", ss[i].period);
		out_time(ss[i].next_charge_at, next, sizeof(next));
		out_table_row(t, (const char *[]){id, ss[i].customer_id, ss[i].plan_code, money,
		                                  ss[i].state, period, next});
	}
	out_table_print(t, stdout);
	out_table_free(t);
	free(ss);
	return CLI_OK;
}

/* A refund or void as a row under its charge. */
static cJSON *refund_json(const struct refund_row *r)
{
	cJSON *o = cJSON_CreateObject();

	cJSON_AddStringToObject(o, "type", r->is_void ? "void" : "refund");
	cJSON_AddStringToObject(o, "mch_refund_no", r->mch_refund_no);
	cJSON_AddNumberToObject(o, "amount_cents", (double)r->amount_cents);
	cJSON_AddStringToObject(o, "state", r->state);
	cJSON_AddStringToObject(o, "pay_order_id", r->pay_order_id);
	cJSON_AddStringToObject(o, "ret_msg", r->ret_msg);
	out_json_time(o, "created_at", r->created_at);
	return o;
}

static void refund_row(struct out_table *t, const struct refund_row *r)
{
	char no[48], money[32], at[64];

	snprintf(no, sizeof(no), "  %s %s", r->is_void ? "void" : "refund", r->mch_refund_no);
	out_money(-r->amount_cents, money, sizeof(money));
	out_time(r->created_at, at, sizeof(at));
	out_table_row(
	    t, (const char *[]){"", no, "", "", money, r->state, r->pay_order_id, at, r->ret_msg});
}

static int show(struct cli *ctx, int argc, char **argv)
{
	const char *pos[1];
	const char *hdr[] = {"CHARGE", "MCH_ORDER_NO", "PERIOD",  "ATTEMPT", "AMOUNT",
	                     "STATE",  "PAY_ORDER_ID", "CREATED", "MESSAGE"};
	struct subscription s;
	struct subscription_charge *ch = NULL;
	struct refund_row *rf = NULL;
	int64_t id;
	int n = 0, nr = 0;
	char err[512];
	PGconn *db;

	if (parse_id_arg(argc, argv, NULL, pos, 1, &id) < 0)
		return CLI_USAGE;
	if (!(db = cli_db(ctx)))
		return CLI_FAIL;
	if (subscriptions_get(db, id, &s, err, sizeof(err)) < 0 ||
	    subscriptions_charges(db, id, &ch, &n, err, sizeof(err)) < 0 ||
	    refunds_of_subscription(db, id, &rf, &nr, err, sizeof(err)) < 0) {
		free(ch);
		return out_fail(err);
	}
	if (ctx->json) {
		cJSON *o = subscription_json(&s), *a = cJSON_AddArrayToObject(o, "charges");
		for (int i = 0; i < n; i++) {
			cJSON *c = cJSON_CreateObject(), *ra;
			cJSON_AddNumberToObject(c, "id", (double)ch[i].id);
			cJSON_AddStringToObject(c, "mch_order_no", ch[i].mch_order_no);
			cJSON_AddNumberToObject(c, "period", ch[i].period);
			cJSON_AddNumberToObject(c, "attempt", ch[i].attempt);
			cJSON_AddNumberToObject(c, "amount_cents", (double)ch[i].amount_cents);
			cJSON_AddStringToObject(c, "state", ch[i].state);
			cJSON_AddStringToObject(c, "pay_order_id", ch[i].pay_order_id);
			cJSON_AddStringToObject(c, "ret_msg", ch[i].ret_msg);
			out_json_time(c, "created_at", ch[i].created_at);
			ra = cJSON_AddArrayToObject(c, "refunds");
			for (int k = 0; k < nr; k++)
				if (rf[k].charge_id == ch[i].id)
					cJSON_AddItemToArray(ra, refund_json(&rf[k]));
			cJSON_AddItemToArray(a, c);
		}
		out_json(o);
	} else {
		struct out_table *t = out_table_new(9, hdr);
		print_summary(&s);
		for (int i = 0; i < n; i++) {
			char cid[24], period[16], attempt[16], money[32], at[64];
			snprintf(cid, sizeof(cid), "%lld", (long long)ch[i].id);
			snprintf(period, sizeof(period), "%d", ch[i].period);
			snprintf(attempt, sizeof(attempt), "%d", ch[i].attempt);
			out_money(ch[i].amount_cents, money, sizeof(money));
			out_time(ch[i].created_at, at, sizeof(at));
			out_table_row(t, (const char *[]){cid, ch[i].mch_order_no, period, attempt,
			                                  money, ch[i].state, ch[i].pay_order_id,
			                                  at, ch[i].ret_msg});
			for (int k = 0; k < nr; k++)
				if (rf[k].charge_id == ch[i].id)
					refund_row(t, &rf[k]);
		}
		if (n)
			out_table_print(t, stdout);
		out_table_free(t);
	}
	free(ch);
	free(rf);
	return CLI_OK;
}

static int cancel(struct cli *ctx, int argc, char **argv)
{
	const char *pos[1];
	int at_end = 0;
	const struct out_opt opts[] = {{"--at-period-end", NULL, &at_end}, {0}};
	struct subscription s;
	int64_t id;
	char err[512];
	PGconn *db;

	if (parse_id_arg(argc, argv, opts, pos, 1, &id) < 0)
		return CLI_USAGE;
	if (!(db = cli_db(ctx)))
		return CLI_FAIL;
	if (subscriptions_cancel(db, id, at_end, &s, err, sizeof(err)) < 0)
		return out_fail(err);
	return print_result(ctx, &s);
}

/* pause and resume: an id and one ledger call. */
static int pause_resume(struct cli *ctx, int argc, char **argv, int resume)
{
	const char *pos[1];
	struct subscription s;
	int64_t id;
	char err[512];
	PGconn *db;
	int rc;

	if (parse_id_arg(argc, argv, NULL, pos, 1, &id) < 0)
		return CLI_USAGE;
	if (!(db = cli_db(ctx)))
		return CLI_FAIL;
	rc = resume ? subscriptions_resume(db, id, ctx->now, &s, err, sizeof(err))
	            : subscriptions_pause(db, id, &s, err, sizeof(err));
	if (rc < 0)
		return out_fail(err);
	return print_result(ctx, &s);
}

static int pause_sub(struct cli *ctx, int argc, char **argv)
{
	return pause_resume(ctx, argc, argv, 0);
}

static int resume_sub(struct cli *ctx, int argc, char **argv)
{
	return pause_resume(ctx, argc, argv, 1);
}

static int change_plan(struct cli *ctx, int argc, char **argv)
{
	const char *pos[2];
	struct subscription s;
	struct plan p;
	int64_t id;
	char err[512];
	PGconn *db;

	if (parse_id_arg(argc, argv, NULL, pos, 2, &id) < 0)
		return CLI_USAGE;
	if (!(db = cli_db(ctx)))
		return CLI_FAIL;
	if (plans_get_current(db, pos[1], &p, err, sizeof(err)) < 0 ||
	    subscriptions_change_plan(db, id, &p, &s, err, sizeof(err)) < 0)
		return out_fail(err);
	return print_result(ctx, &s);
}

int cmd_subscription(struct cli *ctx, int argc, char **argv)
{
	static const struct out_sub subs[] = {{"list", list},
	                                      {"show", show},
	                                      {"cancel", cancel},
	                                      {"pause", pause_sub},
	                                      {"resume", resume_sub},
	                                      {"change-plan", change_plan},
	                                      {0}};

	return out_dispatch(ctx, argc, argv, subs, USAGE);
}
