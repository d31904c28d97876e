/* cmd_summary.c: billctl report summary [--month M | --from D --to D]: per
 * local month and plan, what an accountant or an operator reads every month
 * (README defines each figure). A table, or JSON with --json (cents). */
#include <stdio.h>

#include "out.h"
#include "summary.h"

#define USAGE "usage: billctl report summary [--month YYYY-MM | --from D --to D]"

static void json_summary(const struct summary *s)
{
	cJSON *o = cJSON_CreateObject(), *rows = cJSON_AddArrayToObject(o, "rows");

	for (int i = 0; i < s->n; i++) {
		const struct summary_row *w = &s->rows[i];
		cJSON *j = cJSON_CreateObject();
		const struct {
			const char *key;
			double v;
		} nums[] = {{"gross_cents", (double)w->gross_cents},
		            {"refunded_cents", (double)w->refunded_cents},
		            {"voided_cents", (double)w->voided_cents},
		            {"net_cents", (double)w->net_cents},
		            {"charges", w->charges},
		            {"declines", w->declines},
		            {"recoveries", w->recoveries},
		            {"dunned_periods", w->dunned},
		            {"dunned_recovered", w->recovered},
		            {"new", w->new_subs},
		            {"canceled", w->canceled},
		            {"ended", w->ended},
		            {"paused", w->paused},
		            {"active_at_end", w->active},
		            {"mrr_cents", (double)w->mrr_cents},
		            {"mrr_change_cents", (double)w->mrr_change_cents}};

		cJSON_AddStringToObject(j, "month", w->month);
		if (w->all)
			cJSON_AddNullToObject(j, "plan");
		else
			cJSON_AddStringToObject(j, "plan", w->plan);
		for (size_t k = 0; k < sizeof(nums) / sizeof(nums[0]); k++)
			cJSON_AddNumberToObject(j, nums[k].key, nums[k].v);
		if (w->recovery_rate[0])
			cJSON_AddRawToObject(j, "recovery_rate", w->recovery_rate);
		else
			cJSON_AddNullToObject(j, "recovery_rate");
		cJSON_AddItemToArray(rows, j);
	}
	out_json(o);
}

static void table_summary(const struct summary *s)
{
	const char *hdr[] = {"MONTH", "PLAN",      "GROSS",    "REFUNDED",  "VOIDED",
	                     "NET",   "CHARGES",   "DECLINES", "RECOVERED", "RATE",
	                     "NEW",   "CANCELED",  "ENDED",    "PAUSED",    "ACTIVE",
	                     "MRR",   "MRR_CHANGE"};
	struct out_table *t = out_table_new(17, hdr);

	for (int i = 0; i < s->n; i++) {
		const struct summary_row *w = &s->rows[i];
		const int64_t money[] = {w->gross_cents, w->refunded_cents, w->voided_cents,
		                         w->net_cents,   w->mrr_cents,      w->mrr_change_cents};
		const int counts[] = {w->charges,  w->declines, w->recoveries, w->new_subs,
		                      w->canceled, w->ended,    w->paused,     w->active};
		char m[6][32], k[8][16], rate[24];

		for (int x = 0; x < 6; x++)
			out_money(money[x], m[x], sizeof(m[x]));
		for (int x = 0; x < 8; x++)
			snprintf(k[x], sizeof(k[x]), "%d", counts[x]);
		snprintf(rate, sizeof(rate), "%s%s", w->recovery_rate[0] ? w->recovery_rate : "-",
		         w->recovery_rate[0] ? "%" : "");
		out_table_row(t, (const char *[]){w->month,
		                                  w->all       ? "ALL"
		                                  : w->plan[0] ? w->plan
		                                               : "(link)",
		                                  m[0], m[1], m[2], m[3], k[0], k[1], k[2], rate,
		                                  k[3], k[4], k[5], k[6], k[7], m[4], m[5]});
	}
	out_table_print(t, stdout);
	out_table_free(t);
}

int cmd_report_summary(struct cli *ctx, int argc, char **argv)
{
	const char *month_s = NULL, *from_s = NULL, *to_s = NULL;
	const struct out_opt opts[] = {
	    {"--month", &month_s, NULL}, {"--from", &from_s, NULL}, {"--to", &to_s, NULL}, {0}};
	struct summary s;
	int64_t from, to;
	char err[512];
	PGconn *db;

	if (out_args(argc, argv, 1, opts, NULL, 0, 0, USAGE) < 0 ||
	    out_parse_period(month_s, from_s, to_s, &from, &to) < 0)
		return CLI_USAGE;
	if (!(db = cli_db(ctx)))
		return CLI_FAIL;
	if (summary_build(db, from, to, ctx->cfg.timezone, &s, err, sizeof(err)) < 0)
		return out_fail(err);
	if (ctx->json)
		json_summary(&s);
	else
		table_summary(&s);
	summary_free(&s);
	return CLI_OK;
}
