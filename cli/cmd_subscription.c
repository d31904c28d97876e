/* cmd_subscription.c: billctl subscribe and subscription list|show|cancel|
 * pause|resume|change-plan: admins' changes to the subscriptions ledger. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "out.h"
#include "plans.h"
#include "billing.h"
#include "refunds.h"
#include "subscriptions.h"

#define SUBSCRIBE_USAGE                                                                            \
	"usage: billctl subscribe CUSTOMER PLAN [--start T] [--trial-days N] [--when-bound] "      \
	"[--allow-duplicate] [--bill-arrears] [--dry-run]"
#define USAGE                                                                                      \
	"usage: billctl subscription list [--customer C] [--state S] | show ID | cancel ID "       \
	"[--at-period-end] [--dry-run] | keep ID [--dry-run] | pause ID [--dry-run] | resume ID "  \
	"[--dry-run] | change-plan ID PLAN [--dry-run]"

static cJSON *subscription_json(const void *item)
{
	const struct subscription *s = item;
	cJSON *o = cJSON_CreateObject();

	/* One that will end has no next charge: it ends then. */
	out_json_add(
	    o,
	    "id:I customer_id:s plan:s plan_version:i amount:m next_plan:s state:s "
	    "cancel_at_period_end:b period:i attempts:i cycles_done:i anchor:t trial_end:t "
	    "period_start:t period_end:t next_charge_at:t ends_at:t created_at:t",
	    s->id, s->customer_id, s->plan_code, s->plan_version, s->amount_cents,
	    s->next_plan_id ? s->next_plan_code : NULL, s->state, s->cancel_at_period_end,
	    s->period, s->attempts, s->cycles_done, s->anchor, s->trial_end, s->period_start,
	    s->period_end, s->cancel_at_period_end ? 0 : s->next_charge_at,
	    s->cancel_at_period_end ? s->next_charge_at : 0, s->created_at);
	return o;
}

/* When it is charged next, or ends: "next charge T (29.00 CAD)", "ends at
 * T", "no charge until resumed". */
static void next_text(const struct subscription *s, char *buf, size_t len)
{
	char at[64], money[32];

	out_time(s->next_charge_at, at, sizeof(at));
	out_money(s->amount_cents, money, sizeof(money));
	if (s->cancel_at_period_end && s->next_charge_at)
		snprintf(buf, len, "ends at %s", at);
	else if (s->next_charge_at)
		snprintf(buf, len, "next charge %s (%s CAD)", at, money);
	else if (strcmp(s->state, billing_state_names[BILLING_PAUSED]) == 0)
		snprintf(buf, len, "no charge until resumed");
	else
		snprintf(buf, len, "no next charge");
}

/* One line: what the subscription is now; label: "subscription 7", or what
 * a dry run would do. */
static void print_summary(const char *label, const struct subscription *s)
{
	char next[128], money[32];

	next_text(s, next, sizeof(next));
	out_money(s->amount_cents, money, sizeof(money));
	printf("%s: %s on %s (v%d, %s CAD), %s, %s%s%s\n", label, s->customer_id, s->plan_code,
	       s->plan_version, money, s->state, next, s->next_plan_id ? ", then plan " : "",
	       s->next_plan_id ? s->next_plan_code : "");
}

/* Prints s as changed (or, dry, as it would be). */
static int print_result(struct cli *ctx, const struct subscription *s, int dry)
{
	char label[64];

	if (ctx->json) {
		cJSON *o = subscription_json(s);
		if (dry)
			cJSON_AddBoolToObject(o, "dry_run", 1);
		out_json(o);
		return CLI_OK;
	}
	snprintf(label, sizeof(label), "%ssubscription %lld",
	         dry ? "dry run, nothing changed: " : "", (long long)s->id);
	print_summary(label, s);
	return CLI_OK;
}

/* --dry-run: the change is made in a transaction that is rolled back, so
 * that what is printed is exactly what it would do and nothing stays. */
static int dry_begin(PGconn *db, int dry)
{
	char err[256];

	if (dry && db_begin(db, err, sizeof(err)) < 0)
		return out_fail(err);
	return CLI_OK;
}

/* Ends a change: rolled back when dry; rc (0 / -1 with err) as the verb's. */
static int dry_end(struct cli *ctx, PGconn *db, int dry, int rc, const char *err,
                   const struct subscription *s)
{
	if (dry)
		db_rollback(db);
	return rc < 0 ? out_fail(err) : print_result(ctx, s, dry);
}

int cmd_subscribe(struct cli *ctx, int argc, char **argv)
{
	const char *start_s = NULL, *trial_s = NULL, *pos[2];
	struct subscriptions_new n = {.start = ctx->now, .now = ctx->now};
	int dry = 0, trial = -1, passed = 0, rc;
	const struct out_opt opts[] = {{"--start", &start_s, NULL},
	                               {"--trial-days", &trial_s, NULL},
	                               {"--when-bound", NULL, &n.when_bound},
	                               {"--allow-duplicate", NULL, &n.allow_duplicate},
	                               {"--bill-arrears", NULL, &n.bill_arrears},
	                               {"--dry-run", NULL, &dry},
	                               {0}};
	struct plan p;
	struct subscription s;
	char err[512], money[32];
	PGconn *db;

	if (out_args(argc, argv, 1, opts, pos, 2, 2, SUBSCRIBE_USAGE) < 0)
		return CLI_USAGE;
	if ((start_s && out_parse_time("--start", start_s, &n.start) < 0) ||
	    (trial_s && out_parse_int("--trial-days", trial_s, 0, 3650, &trial) < 0))
		return CLI_USAGE;
	if (!(db = cli_db(ctx)))
		return CLI_FAIL;
	if (plans_get_current(db, pos[1], &p, err, sizeof(err)) < 0)
		return out_fail(err);
	n.customer_id = pos[0];
	n.plan = &p;
	n.trial_days = trial >= 0 ? trial : p.trial_days;
	if (dry_begin(db, dry) != CLI_OK)
		return CLI_FAIL;
	rc = subscriptions_create(db, &n, &s, &passed, err, sizeof(err));
	if (dry)
		db_rollback(db);
	if (rc < 0)
		return out_fail(err);
	out_money(passed * s.amount_cents, money, sizeof(money));
	if (ctx->json) {
		cJSON *o = subscription_json(&s);
		if (dry) {
			cJSON_DeleteItemFromObject(o, "id");
			cJSON_AddBoolToObject(o, "dry_run", 1);
		}
		out_json_add(o, "arrears_periods:i arrears_cents:I arrears_billed:b", passed,
		             passed * s.amount_cents, n.bill_arrears && passed > 0);
		out_json(o);
		return CLI_OK;
	}
	if (dry)
		print_summary("dry run, nothing changed: would create a subscription", &s);
	else
		print_result(ctx, &s, 0);
	if (passed > 0 && n.bill_arrears)
		printf("%d earlier period%s billed in arrears too: %s CAD\n", passed,
		       passed > 1 ? "s" : "", money);
	else if (passed > 0)
		printf("started %d period%s before now: only the current one is billed "
		       "(--bill-arrears would bill %s CAD more)\n",
		       passed, passed > 1 ? "s" : "", money);
	return CLI_OK;
}

static int parse_id_arg(int argc, char **argv, const struct out_opt *opts, const char **pos,
                        int npos, int64_t *id)
{
	if (out_args(argc, argv, 2, opts, pos, npos, npos, USAGE) < 0 ||
	    out_parse_id("subscription", pos[0], id) < 0)
		return -1;
	return 0;
}

static void subscription_row(struct out_table *t, const void *item)
{
	const struct subscription *s = item;
	char id[24], money[32], period[16], next[128];

	snprintf(id, sizeof(id), "%lld", (long long)s->id);
	out_money(s->amount_cents, money, sizeof(money));
	snprintf(period, sizeof(period), "%d", s->period);
	next_text(s, next, sizeof(next));
	out_table_row(
	    t, (const char *[]){id, s->customer_id, s->plan_code, money, s->state, period, next});
}

static int list(struct cli *ctx, int argc, char **argv)
{
	const char *customer = NULL, *state = NULL;
	const struct out_opt opts[] = {
	    {"--customer", &customer, NULL}, {"--state", &state, NULL}, {0}};
	const char *hdr[] = {"ID", "CUSTOMER", "PLAN", "AMOUNT", "STATE", "PERIOD", "NEXT"};
	struct subscription *ss = NULL;
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
	out_list(ctx, ss, n, sizeof(*ss), subscription_json, 7, hdr, subscription_row);
	free(ss);
	return CLI_OK;
}

/* A refund or void as a row under its charge. */
static cJSON *refund_json(const struct refund_row *r)
{
	cJSON *o = cJSON_CreateObject();

	out_json_add(
	    o,
	    "type:s mch_refund_no:s amount_cents:I state:s pay_order_id:s ret_msg:s created_at:t",
	    r->is_void ? "void" : "refund", r->mch_refund_no, r->amount_cents, r->state,
	    r->pay_order_id, r->ret_msg, r->created_at);
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
			out_json_add(
			    c,
			    "id:I mch_order_no:s period:i attempt:i amount_cents:I state:s "
			    "pay_order_id:s ret_msg:s created_at:t",
			    ch[i].id, ch[i].mch_order_no, ch[i].period, ch[i].attempt,
			    ch[i].amount_cents, ch[i].state, ch[i].pay_order_id, ch[i].ret_msg,
			    ch[i].created_at);
			ra = cJSON_AddArrayToObject(c, "refunds");
			for (int k = 0; k < nr; k++)
				if (rf[k].charge_id == ch[i].id)
					cJSON_AddItemToArray(ra, refund_json(&rf[k]));
			cJSON_AddItemToArray(a, c);
		}
		out_json(o);
	} else {
		struct out_table *t = out_table_new(9, hdr);
		char label[48];
		snprintf(label, sizeof(label), "subscription %lld", (long long)s.id);
		print_summary(label, &s);
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

enum change_kind { CHANGE_CANCEL, CHANGE_PAUSE, CHANGE_RESUME, CHANGE_KEEP, CHANGE_PLAN };

/* Every change of one subscription: its id (and change-plan's plan),
 * --dry-run (and cancel's --at-period-end), one ledger call. */
static int change(struct cli *ctx, int argc, char **argv, enum change_kind k)
{
	const char *pos[2];
	int at_end = 0, dry = 0, rc = -1;
	/* --at-period-end is cancel's alone: the others' options start after it. */
	const struct out_opt all[] = {
	    {"--at-period-end", NULL, &at_end}, {"--dry-run", NULL, &dry}, {0}};
	struct subscription s;
	struct plan p;
	int64_t id;
	char err[512];
	PGconn *db;

	if (parse_id_arg(argc, argv, k == CHANGE_CANCEL ? all : all + 1, pos,
	                 k == CHANGE_PLAN ? 2 : 1, &id) < 0)
		return CLI_USAGE;
	if (!(db = cli_db(ctx)))
		return CLI_FAIL;
	if (k == CHANGE_PLAN && plans_get_current(db, pos[1], &p, err, sizeof(err)) < 0)
		return out_fail(err);
	if (dry_begin(db, dry) != CLI_OK)
		return CLI_FAIL;
	switch (k) {
	case CHANGE_CANCEL:
		rc = subscriptions_cancel(db, id, at_end, &s, err, sizeof(err));
		break;
	case CHANGE_PAUSE:
		rc = subscriptions_pause(db, id, ctx->now, &s, err, sizeof(err));
		break;
	case CHANGE_RESUME:
		rc = subscriptions_resume(db, id, ctx->now, &s, err, sizeof(err));
		break;
	case CHANGE_KEEP:
		rc = subscriptions_keep(db, id, &s, err, sizeof(err));
		break;
	case CHANGE_PLAN:
		rc = subscriptions_change_plan(db, id, &p, &s, err, sizeof(err));
		break;
	}
	return dry_end(ctx, db, dry, rc, err, &s);
}

int cmd_subscription(struct cli *ctx, int argc, char **argv)
{
	static const struct {
		const char *name;
		enum change_kind kind;
	} changes[] = {{"cancel", CHANGE_CANCEL},
	               {"pause", CHANGE_PAUSE},
	               {"resume", CHANGE_RESUME},
	               {"keep", CHANGE_KEEP},
	               {"change-plan", CHANGE_PLAN}};
	static const struct out_sub subs[] = {{"list", list}, {"show", show}, {0}};

	for (size_t i = 0; argc > 1 && i < sizeof(changes) / sizeof(changes[0]); i++)
		if (strcmp(argv[1], changes[i].name) == 0)
			return change(ctx, argc, argv, changes[i].kind);
	return out_dispatch(ctx, argc, argv, subs, USAGE);
}
