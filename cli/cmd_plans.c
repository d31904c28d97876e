/* cmd_plans.c: `billctl plans sync` (the plan files of plans_dir into
 * versioned rows; the only writer of plan rows), `plans sync --dry-run` (what
 * a sync would change, nothing written) and `billctl plans list` (the current
 * version of each plan, as a table or JSON). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "out.h"
#include "plans.h"

#define USAGE "usage: billctl plans sync [--dry-run] | list"

/* "1d,3d,7d -> past_due"; "none -> cancel". */
static void retry_text(const struct plan *p, char *buf, size_t len)
{
	char schedule[PLAN_MAX_RETRY * 8];

	plans_retry_format(p, schedule, sizeof(schedule));
	snprintf(buf, len, "%s -> %s", p->nretry ? schedule : "none",
	         plans_exhausted_name(p->on_exhausted));
}

/* One line per plan a sync would write: a new plan, or a new version with
 * its price change. */
static void print_diff_text(const struct plan *p, const struct plan_diff *d, int n)
{
	for (int i = 0; i < n; i++) {
		char was[32], now[32];

		out_money(p[i].amount, now, sizeof(now));
		out_money(d[i].old_amount, was, sizeof(was));
		if (d[i].change == PLAN_NEW)
			printf("%s: new plan, v1, amount %s\n", p[i].code, now);
		else if (d[i].change == PLAN_CHANGED && p[i].amount != d[i].old_amount)
			printf("%s: v%d -> v%d, amount %s -> %s\n", p[i].code, d[i].version,
			       d[i].version + 1, was, now);
		else if (d[i].change == PLAN_CHANGED)
			printf("%s: v%d -> v%d, terms changed, amount %s unchanged\n", p[i].code,
			       d[i].version, d[i].version + 1, now);
	}
}

static void print_diff_json(const struct plan *p, const struct plan_diff *d, int n, int created)
{
	cJSON *o = cJSON_CreateObject(), *changes = cJSON_CreateArray();

	out_json_add(o, "dry_run:b loaded:i created:i", 1, n, created);
	for (int i = 0; i < n; i++) {
		cJSON *c;

		if (d[i].change == PLAN_SAME)
			continue;
		c = cJSON_CreateObject();
		out_json_add(c, "code:s version:i amount_cents:I", p[i].code, d[i].version + 1,
		             p[i].amount);
		if (d[i].change == PLAN_NEW)
			out_json_add(c, "previous_version:j previous_amount_cents:j", (cJSON *)NULL,
			             (cJSON *)NULL);
		else
			out_json_add(c, "previous_version:i previous_amount_cents:I", d[i].version,
			             d[i].old_amount);
		cJSON_AddItemToArray(changes, c);
	}
	cJSON_AddItemToObject(o, "changes", changes);
	out_json(o);
}

static int run_dry_run(struct cli *ctx, PGconn *db)
{
	char err[512];
	struct plan *p = NULL;
	struct plan_diff *d;
	int n = 0, created = 0;

	if (plans_load_dir(ctx->cfg.plans_dir, &p, &n, err, sizeof(err)) < 0)
		return out_fail(err);
	d = calloc((size_t)n + 1, sizeof(*d));
	if (!d || plans_diff(db, p, n, d, err, sizeof(err)) < 0) {
		cli_error("%s", d ? err : "out of memory");
		free(d);
		free(p);
		return CLI_FAIL;
	}
	for (int i = 0; i < n; i++)
		created += d[i].change != PLAN_SAME;
	if (ctx->json) {
		print_diff_json(p, d, n, created);
	} else {
		print_diff_text(p, d, n);
		printf("plans: %d loaded, %d new version%s (dry run: nothing written)\n", n,
		       created, created == 1 ? "" : "s");
	}
	free(d);
	free(p);
	return CLI_OK;
}

static int run_sync(struct cli *ctx, int argc, char **argv)
{
	char err[512];
	int loaded, created, dry_run = 0;
	const struct out_opt opts[] = {{"--dry-run", NULL, &dry_run}, {0}};
	PGconn *db;

	if (out_args(argc, argv, 2, opts, NULL, 0, 0, USAGE) < 0)
		return CLI_USAGE;
	db = cli_db(ctx);
	if (!db)
		return CLI_FAIL;
	if (dry_run)
		return run_dry_run(ctx, db);
	if (plans_sync_dir(db, ctx->cfg.plans_dir, &loaded, &created, err, sizeof(err)) < 0)
		return out_fail(err);
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

	out_json_add(o,
	             "id:I code:s version:i name:s amount:m currency:s interval:s interval_count:i "
	             "trial_days:i cycles:j",
	             p->id, p->code, p->version, p->name, p->amount, "CAD",
	             cal_unit_name(p->interval), p->interval_count, p->trial_days,
	             p->cycles ? cJSON_CreateNumber(p->cycles) : NULL);
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

		out_money(p[i].amount, amount, sizeof(amount));
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
	if (plans_list(db, &p, &n, err, sizeof(err)) < 0)
		return out_fail(err);
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
	if (argc >= 2 && strcmp(argv[1], "sync") == 0)
		return run_sync(ctx, argc, argv);
	if (argc == 2 && strcmp(argv[1], "list") == 0)
		return run_list(ctx);
	cli_error(USAGE);
	return CLI_USAGE;
}
