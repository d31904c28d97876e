/* cmd_report.c: billctl report --from D --to D [--format csv|json]
 * [--totals]: the accountants' export. The CSV header is fixed (import
 * templates rely on it); RFC 4180 with CRLF line ends. */
#include <stdio.h>
#include <string.h>

#include "out.h"
#include "report.h"

#define USAGE "usage: billctl report --from D --to D [--format csv|json] [--totals]"

static const char ROWS_HEADER[] = "date,type,customer_id,plan,amount_cents,amount,currency,"
                                  "mch_order_no,pay_order_id,trans_id,status";
static const char TOTALS_HEADER[] =
    "date,plan,charges_cents,refunds_cents,voids_cents,net_cents,net";

static void csv_cents(FILE *f, int64_t cents, int with_dollars)
{
	char buf[32];

	snprintf(buf, sizeof(buf), "%lld", (long long)cents);
	out_csv_field(f, buf, 0);
	if (with_dollars) {
		fputc(',', f);
		out_money(cents, buf, sizeof(buf));
		out_csv_field(f, buf, 0);
	}
}

static void csv_rows(const struct report *r, FILE *f)
{
	fputs(ROWS_HEADER, f);
	out_csv_end(f);
	for (int i = 0; i < r->n; i++) {
		const struct report_row *w = &r->rows[i];
		const char *text[] = {w->customer_id, w->plan};
		const char *tail[] = {w->currency, w->mch_order_no, w->pay_order_id, w->trans_id,
		                      w->status};

		fprintf(f, "%s,%s,", w->date, w->type);
		for (size_t k = 0; k < 2; k++) {
			out_csv_field(f, text[k], 1);
			fputc(',', f);
		}
		csv_cents(f, w->amount_cents, 1);
		for (size_t k = 0; k < sizeof(tail) / sizeof(tail[0]); k++) {
			fputc(',', f);
			out_csv_field(f, tail[k], 1);
		}
		out_csv_end(f);
	}
}

static void csv_total(const struct report_total *t, FILE *f)
{
	out_csv_field(f, t->date, 1);
	fputc(',', f);
	out_csv_field(f, t->plan, 1);
	fputc(',', f);
	csv_cents(f, t->charges_cents, 0);
	fputc(',', f);
	csv_cents(f, t->refunds_cents, 0);
	fputc(',', f);
	csv_cents(f, t->voids_cents, 0);
	fputc(',', f);
	csv_cents(f, t->net_cents, 1);
	out_csv_end(f);
}

/* One line per (date, plan), then the window's total (date "total"). */
static void csv_totals(const struct report *r, FILE *f)
{
	struct report_total all = r->all;

	fputs(TOTALS_HEADER, f);
	out_csv_end(f);
	for (int i = 0; i < r->ntotals; i++)
		csv_total(&r->totals[i], f);
	snprintf(all.date, sizeof(all.date), "total");
	all.plan[0] = '\0';
	csv_total(&all, f);
}

static cJSON *total_json(const struct report_total *t)
{
	cJSON *o = cJSON_CreateObject();
	char net[32];

	if (t->date[0]) { /* the grand total has neither */
		cJSON_AddStringToObject(o, "date", t->date);
		cJSON_AddStringToObject(o, "plan", t->plan);
	}
	cJSON_AddNumberToObject(o, "charges_cents", (double)t->charges_cents);
	cJSON_AddNumberToObject(o, "refunds_cents", (double)t->refunds_cents);
	cJSON_AddNumberToObject(o, "voids_cents", (double)t->voids_cents);
	cJSON_AddNumberToObject(o, "net_cents", (double)t->net_cents);
	out_money(t->net_cents, net, sizeof(net));
	cJSON_AddStringToObject(o, "net", net);
	return o;
}

/* Totals per day and per plan, as the JSON's "totals". */
static cJSON *totals_json(const struct report *r)
{
	cJSON *o = total_json(&r->all);
	cJSON *by = cJSON_AddArrayToObject(o, "by_date_plan");
	cJSON *days = cJSON_AddObjectToObject(o, "by_date");
	cJSON *plans = cJSON_AddObjectToObject(o, "by_plan");

	for (int i = 0; i < r->ntotals; i++) {
		const struct report_total *t = &r->totals[i];
		cJSON *d = cJSON_GetObjectItemCaseSensitive(days, t->date);
		cJSON *p = cJSON_GetObjectItemCaseSensitive(plans, t->plan);

		cJSON_AddItemToArray(by, total_json(t));
		if (!d)
			d = cJSON_AddNumberToObject(days, t->date, 0);
		if (!p)
			p = cJSON_AddNumberToObject(plans, t->plan, 0);
		cJSON_SetNumberValue(d, d->valuedouble + (double)t->net_cents);
		cJSON_SetNumberValue(p, p->valuedouble + (double)t->net_cents);
	}
	return o;
}

static void json_report(const struct report *r, const char *from, const char *to)
{
	cJSON *o = cJSON_CreateObject(), *rows = cJSON_AddArrayToObject(o, "rows");

	cJSON_AddStringToObject(o, "from", from);
	cJSON_AddStringToObject(o, "to", to);
	for (int i = 0; i < r->n; i++) {
		const struct report_row *w = &r->rows[i];
		cJSON *j = cJSON_CreateObject();

		cJSON_AddStringToObject(j, "date", w->date);
		cJSON_AddStringToObject(j, "type", w->type);
		cJSON_AddStringToObject(j, "customer_id", w->customer_id);
		cJSON_AddStringToObject(j, "plan", w->plan);
		out_json_money(j, w->amount_cents);
		cJSON_AddStringToObject(j, "currency", w->currency);
		cJSON_AddStringToObject(j, "mch_order_no", w->mch_order_no);
		cJSON_AddStringToObject(j, "pay_order_id", w->pay_order_id);
		cJSON_AddStringToObject(j, "trans_id", w->trans_id);
		cJSON_AddStringToObject(j, "status", w->status);
		cJSON_AddItemToArray(rows, j);
	}
	cJSON_AddItemToObject(o, "totals", totals_json(r));
	out_json(o);
}

int cmd_report(struct cli *ctx, int argc, char **argv)
{
	const char *from_s = NULL, *to_s = NULL, *format = NULL;
	int totals = 0;
	const struct out_opt opts[] = {{"--from", &from_s, NULL},
	                               {"--to", &to_s, NULL},
	                               {"--format", &format, NULL},
	                               {"--totals", NULL, &totals},
	                               {0}};
	struct report r;
	int64_t from, to;
	char err[512];
	PGconn *db;
	int json;

	if (out_args(argc, argv, 1, opts, NULL, 0, 0, USAGE) < 0)
		return CLI_USAGE;
	if (format && strcmp(format, "csv") != 0 && strcmp(format, "json") != 0) {
		cli_error("--format: '%s' is not csv or json", format);
		return CLI_USAGE;
	}
	json = format ? strcmp(format, "json") == 0 : ctx->json;
	if (out_parse_window(from_s, to_s, &from, &to, USAGE) < 0)
		return CLI_USAGE;
	if (!(db = cli_db(ctx)))
		return CLI_FAIL;
	if (report_build(db, from, to, &r, err, sizeof(err)) < 0) {
		cli_error("%s", err);
		return CLI_FAIL;
	}
	if (json)
		json_report(&r, from_s, to_s);
	else if (totals)
		csv_totals(&r, stdout);
	else
		csv_rows(&r, stdout);
	report_free(&r);
	return CLI_OK;
}
