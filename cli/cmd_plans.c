/* cmd_plans.c: `billctl plans sync` (the plan files of plans_dir into
 * versioned rows) and `billctl plans list` (the current version of each plan,
 * as a table or JSON). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "cli.h"
#include "plans.h"

static void dollars(int64_t cents, char *buf, size_t len)
{
	snprintf(buf, len, "%lld.%02lld", (long long)(cents / 100), (long long)(cents % 100));
}

/* "1d,3d,7d -> past_due"; "none -> cancel". */
static void retry_text(const struct plan *p, char *buf, size_t len)
{
	char schedule[PLAN_MAX_RETRY * 8];

	plans_retry_format(p, schedule, sizeof(schedule));
	snprintf(buf, len, "%s -> %s", p->nretry ? schedule : "none",
	         plans_exhausted_name(p->on_exhausted));
}

static int run_sync(struct cli *ctx)
{
	char err[512];
	int loaded, created;
	PGconn *db = cli_db(ctx);

	if (!db)
		return CLI_FAIL;
	if (plans_sync_dir(db, ctx->cfg.plans_dir, &loaded, &created, err, sizeof(err)) < 0) {
		cli_error("%s", err);
		return CLI_FAIL;
	}
	if (ctx->json)
		printf("{\"loaded\":%d,\"created\":%d}\n", loaded, created);
	else
		printf("plans: %d loaded, %d new version%s\n", loaded, created,
		       created == 1 ? "" : "s");
	return CLI_OK;
}

static cJSON *plan_json(const struct plan *p)
{
	cJSON *o = cJSON_CreateObject(), *retry = cJSON_CreateArray();
	char amount[32];

	dollars(p->amount, amount, sizeof(amount));
	cJSON_AddNumberToObject(o, "id", (double)p->id);
	cJSON_AddStringToObject(o, "code", p->code);
	cJSON_AddNumberToObject(o, "version", p->version);
	cJSON_AddStringToObject(o, "name", p->name);
	cJSON_AddNumberToObject(o, "amount_cents", (double)p->amount);
	cJSON_AddStringToObject(o, "amount", amount);
	cJSON_AddStringToObject(o, "currency", "CAD");
	cJSON_AddStringToObject(o, "interval", cal_unit_name(p->interval));
	cJSON_AddNumberToObject(o, "interval_count", p->interval_count);
	cJSON_AddNumberToObject(o, "trial_days", p->trial_days);
	if (p->cycles)
		cJSON_AddNumberToObject(o, "cycles", p->cycles);
	else
		cJSON_AddNullToObject(o, "cycles");
	for (int i = 0; i < p->nretry; i++) {
		char d[16];

		cal_format_duration(p->retry[i], d, sizeof(d));
		cJSON_AddItemToArray(retry, cJSON_CreateString(d));
	}
	cJSON_AddItemToObject(o, "retry", retry);
	cJSON_AddStringToObject(o, "on_exhausted", plans_exhausted_name(p->on_exhausted));
	return o;
}

static void print_json(const struct plan *p, int n)
{
	cJSON *arr = cJSON_CreateArray();
	char *text;

	for (int i = 0; i < n; i++)
		cJSON_AddItemToArray(arr, plan_json(&p[i]));
	text = cJSON_PrintUnformatted(arr);
	printf("%s\n", text ? text : "[]");
	cJSON_free(text);
	cJSON_Delete(arr);
}

static void print_table(const struct plan *p, int n)
{
	int wcode = 4, wname = 4;

	for (int i = 0; i < n; i++) {
		if ((int)strlen(p[i].code) > wcode)
			wcode = (int)strlen(p[i].code);
		if ((int)strlen(p[i].name) > wname)
			wname = (int)strlen(p[i].name);
	}
	printf("%-*s  %7s  %-*s  %10s  %-10s  %5s  %6s  %s\n", wcode, "CODE", "VERSION", wname,
	       "NAME", "AMOUNT", "INTERVAL", "TRIAL", "CYCLES", "RETRY");
	for (int i = 0; i < n; i++) {
		char amount[32], interval[32], trial[16], cycles[16], retry[256];

		dollars(p[i].amount, amount, sizeof(amount));
		snprintf(interval, sizeof(interval), "%d %s%s", p[i].interval_count,
		         cal_unit_name(p[i].interval), p[i].interval_count == 1 ? "" : "s");
		snprintf(trial, sizeof(trial), p[i].trial_days ? "%dd" : "-", p[i].trial_days);
		snprintf(cycles, sizeof(cycles), p[i].cycles ? "%d" : "-", p[i].cycles);
		retry_text(&p[i], retry, sizeof(retry));
		printf("%-*s  %7d  %-*s  %10s  %-10s  %5s  %6s  %s\n", wcode, p[i].code,
		       p[i].version, wname, p[i].name, amount, interval, trial, cycles, retry);
	}
}

static int run_list(struct cli *ctx)
{
	char err[512];
	struct plan *p;
	int n;
	PGconn *db = cli_db(ctx);

	if (!db)
		return CLI_FAIL;
	if (plans_list(db, &p, &n, err, sizeof(err)) < 0) {
		cli_error("%s", err);
		return CLI_FAIL;
	}
	if (ctx->json)
		print_json(p, n);
	else if (n == 0)
		printf("plans: none (billctl plans sync loads %s)\n", ctx->cfg.plans_dir);
	else
		print_table(p, n);
	free(p);
	return CLI_OK;
}

int cmd_plans(struct cli *ctx, int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "sync") == 0)
		return run_sync(ctx);
	if (argc == 2 && strcmp(argv[1], "list") == 0)
		return run_list(ctx);
	cli_error("usage: billctl plans sync|list");
	return CLI_USAGE;
}
