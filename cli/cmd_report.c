/* cmd_report.c: billctl report [--month M | --from D --to D] [--format
 * csv|json] [--totals] [--allow-open]: the accountants' export. The CSV
 * header is fixed (import templates rely on it); RFC 4180 with CRLF line
 * ends. A window with movements whose outcome is still unknown is not closed:
 * they are named on stderr and the exit is 1 unless --allow-open. */
#include <stdio.h>
#include <string.h>

#include "out.h"
#include "report.h"

#define USAGE                                                                                      \
	"usage: billctl report [--month YYYY-MM | --from D --to D] [--format csv|json] "           \
	"[--totals] [--allow-open]"

static const char ROWS_HEADER[] = "date,type,customer_id,plan,amount_cents,amount,currency,"
                                  "mch_order_no,pay_order_id,trans_id,status,"
                                  "original_pay_order_id,gateway_time";
static const char TOTALS_HEADER[] = "date,plan,currency,charges,charges_cents,refunds,"
                                    "refunds_cents,voids,voids_cents,net_cents,net";

static void csv_int(FILE *f, int64_t v)
{
	char buf[32];

	snprintf(buf, sizeof(buf), "%lld", (long long)v);
	out_csv_field(f, buf, 0);
}

static void csv_money(FILE *f, int64_t cents)
{
	char buf[32];

	out_money(cents, buf, sizeof(buf));
	out_csv_field(f, buf, 0);
}

static void csv_rows(const struct report *r, FILE *f)
{
	fputs(ROWS_HEADER, f);
	out_csv_end(f);
	for (int i = 0; i < r->n; i++) {
		const struct report_row *w = &r->rows[i];
		const char *text[] = {w->customer_id, w->plan};
		const char *tail[] = {w->currency,    w->mch_order_no, w->pay_order_id,
		                      w->trans_id,    w->status,       w->original_pay_order_id,
		                      w->gateway_time};

		fprintf(f, "%s,%s,", w->date, w->type);
		for (size_t k = 0; k < 2; k++) {
			out_csv_field(f, text[k], 1);
			fputc(',', f);
		}
		csv_int(f, w->amount_cents);
		fputc(',', f);
		csv_money(f, w->amount_cents);
		for (size_t k = 0; k < sizeof(tail) / sizeof(tail[0]); k++) {
			fputc(',', f);
			out_csv_field(f, tail[k], 1);
		}
		out_csv_end(f);
	}
}

static void csv_total(const struct report_total *t, const char *date, FILE *f)
{
	const int64_t nums[] = {t->charges, t->charges_cents, t->refunds,  t->refunds_cents,
	                        t->voids,   t->voids_cents,   t->net_cents};

	out_csv_field(f, date, 1);
	fputc(',', f);
	out_csv_field(f, t->plan, 1);
	fputc(',', f);
	out_csv_field(f, t->currency, 1);
	for (size_t k = 0; k < sizeof(nums) / sizeof(nums[0]); k++) {
		fputc(',', f);
		csv_int(f, nums[k]);
	}
	fputc(',', f);
	csv_money(f, t->net_cents);
	out_csv_end(f);
}

/* After the rows: a blank line, the totals header, one line per (date,
 * plan, currency), then the window's total per currency (date "total"). */
static void csv_totals(const struct report *r, FILE *f)
{
	out_csv_end(f);
	fputs(TOTALS_HEADER, f);
	out_csv_end(f);
	for (int i = 0; i < r->ntotals; i++)
		csv_total(&r->totals[i], r->totals[i].date, f);
	for (int i = 0; i < r->nall; i++)
		csv_total(&r->all[i], "total", f);
}

static cJSON *total_json(const struct report_total *t)
{
	cJSON *o = cJSON_CreateObject();

	if (t->date[0]) /* the window's totals have neither */
		out_json_add(o, "date:s plan:s", t->date, t->plan);
	out_json_add(o,
	             "currency:s charges:i charges_cents:I refunds:i refunds_cents:I voids:i "
	             "voids_cents:I net:m",
	             t->currency, t->charges, t->charges_cents, t->refunds, t->refunds_cents,
	             t->voids, t->voids_cents, t->net_cents);
	return o;
}

/* {key: net cents} of the totals grouped by one of their fields, summed in
 * integer cents (the totals come by date, so dates group in order). */
static cJSON *net_by(const struct report *r, size_t field)
{
	cJSON *o = cJSON_CreateObject();

	for (int i = 0; i < r->ntotals; i++) {
		const char *key = (const char *)&r->totals[i] + field;
		int64_t sum = 0;
		int seen = 0;

		for (int k = 0; k < i && !seen; k++)
			seen = strcmp((const char *)&r->totals[k] + field, key) == 0;
		if (seen)
			continue;
		for (int k = i; k < r->ntotals; k++)
			if (strcmp((const char *)&r->totals[k] + field, key) == 0)
				sum += r->totals[k].net_cents;
		cJSON_AddNumberToObject(o, key, (double)sum);
	}
	return o;
}

/* The JSON's "totals": the window's (one per currency), per day and plan,
 * and net per day and per plan. */
static cJSON *totals_json(const struct report *r)
{
	cJSON *o = cJSON_CreateObject();
	cJSON *window = cJSON_AddArrayToObject(o, "window");
	cJSON *by = cJSON_AddArrayToObject(o, "by_date_plan");

	for (int i = 0; i < r->nall; i++)
		cJSON_AddItemToArray(window, total_json(&r->all[i]));
	for (int i = 0; i < r->ntotals; i++)
		cJSON_AddItemToArray(by, total_json(&r->totals[i]));
	cJSON_AddItemToObject(o, "by_date", net_by(r, offsetof(struct report_total, date)));
	cJSON_AddItemToObject(o, "by_plan", net_by(r, offsetof(struct report_total, plan)));
	return o;
}

/* window: {"month"} or {"from", "to"} as given. */
static void json_report(const struct report *r, const char *const window[3], const char *timezone)
{
	cJSON *o = cJSON_CreateObject(), *rows, *open;

	if (window[0])
		out_json_add(o, "month:s", window[0]);
	else
		out_json_add(o, "from:s to:s", window[1], window[2]);
	out_json_add(o, "timezone:s", timezone);
	rows = cJSON_AddArrayToObject(o, "rows");
	for (int i = 0; i < r->n; i++) {
		const struct report_row *w = &r->rows[i];
		cJSON *j = cJSON_CreateObject();

		out_json_add(
		    j,
		    "date:s type:s customer_id:s plan:s amount:m currency:s mch_order_no:s "
		    "pay_order_id:s trans_id:s status:s original_pay_order_id:s gateway_time:s",
		    w->date, w->type, w->customer_id, w->plan, w->amount_cents, w->currency,
		    w->mch_order_no, w->pay_order_id, w->trans_id, w->status,
		    w->original_pay_order_id, w->gateway_time);
		cJSON_AddItemToArray(rows, j);
	}
	cJSON_AddItemToObject(o, "totals", totals_json(r));
	open = cJSON_AddArrayToObject(o, "open");
	for (int i = 0; i < r->nopen; i++)
		cJSON_AddItemToArray(open, cJSON_CreateString(r->open[i].mch_order_no));
	out_json(o);
}

/* Names the open movements on stderr, in one line. */
static void report_open(const struct report *r, int allowed)
{
	fprintf(stderr, "billctl: %d movement%s of the window %s an unknown outcome:", r->nopen,
	        r->nopen == 1 ? "" : "s", r->nopen == 1 ? "has" : "have");
	for (int i = 0; i < r->nopen; i++)
		fprintf(stderr, "%s %s %s (%s)", i ? "," : "", r->open[i].type,
		        r->open[i].mch_order_no, r->open[i].state);
	fprintf(stderr, "; run billctl reconcile%s\n",
	        allowed ? " (--allow-open: reported anyway)" : ", then report again");
}

int cmd_report(struct cli *ctx, int argc, char **argv)
{
	const char *month_s = NULL, *from_s = NULL, *to_s = NULL, *format = NULL;
	int totals = 0, allow_open = 0;
	const struct out_opt opts[] = {{"--month", &month_s, NULL},
	                               {"--from", &from_s, NULL},
	                               {"--to", &to_s, NULL},
	                               {"--format", &format, NULL},
	                               {"--totals", NULL, &totals},
	                               {"--allow-open", NULL, &allow_open},
	                               {0}};
	struct report r;
	int64_t from, to;
	char err[512];
	PGconn *db;
	int json;

	if (argc > 1 && strcmp(argv[1], "summary") == 0)
		return cmd_report_summary(ctx, argc - 1, argv + 1);
	if (out_args(argc, argv, 1, opts, NULL, 0, 0, USAGE) < 0)
		return CLI_USAGE;
	if (format && strcmp(format, "csv") != 0 && strcmp(format, "json") != 0) {
		cli_error("--format: '%s' is not csv or json", format);
		return CLI_USAGE;
	}
	json = format ? strcmp(format, "json") == 0 : ctx->json;
	if (out_parse_period(month_s, from_s, to_s, &from, &to) < 0)
		return CLI_USAGE;
	if (!(db = cli_db(ctx)))
		return CLI_FAIL;
	if (report_build(db, from, to, &r, err, sizeof(err)) < 0)
		return out_fail(err);
	if (r.nopen && !allow_open) {
		report_open(&r, 0);
		report_free(&r);
		return CLI_FAIL;
	}
	if (r.nopen)
		report_open(&r, 1);
	if (json) {
		json_report(&r, (const char *[]){month_s, from_s, to_s}, ctx->cfg.timezone);
	} else {
		csv_rows(&r, stdout);
		if (totals)
			csv_totals(&r, stdout);
	}
	report_free(&r);
	return CLI_OK;
}
