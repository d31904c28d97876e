/* cmd_reconcile.c: billctl reconcile --from D --to D: the window's ledger
 * checked against the gateway; what disagrees is listed, the dangerous first.
 * Exit 1 while anything needs a human, 0 when clean. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "events.h"
#include "out.h"
#include "reconcile.h"
#include "scheduler.h"

#define USAGE "usage: billctl reconcile --from D --to D [--repair]"

struct progress {
	struct timespec start, shown;
};

static double since(const struct timespec *a, const struct timespec *b)
{
	return (double)(b->tv_sec - a->tv_sec) + (double)(b->tv_nsec - a->tv_nsec) / 1e9;
}

/* On a terminal: the answers so far and their rate, updated in place four
 * times a second, and a last time when all are in. */
static void show_progress(void *udata, int done, int total)
{
	struct progress *p = udata;
	struct timespec now;
	double secs;

	clock_gettime(CLOCK_MONOTONIC, &now);
	if (done < total && since(&p->shown, &now) < 0.25)
		return;
	p->shown = now;
	secs = since(&p->start, &now);
	fprintf(stderr, "\rreconcile: %d of %d orders checked, %.0f/s ", done, total,
	        secs > 0 ? done / secs : 0.0);
	if (done == total)
		fputc('\n', stderr);
	fflush(stderr);
}

/* "12 ok (1234.56)": a count and its money. */
static void count_money(char *buf, size_t len, int count, const char *name, int64_t cents)
{
	char money[32];

	out_money(cents, money, sizeof(money));
	snprintf(buf, len, "%d %s (%s)", count, name, money);
}

static void gateway_side(const struct reconcile_item *it, char *buf, size_t len)
{
	if (it->gw_found < 0)
		snprintf(buf, len, "?");
	else if (it->gw_found == 0)
		snprintf(buf, len, "absent");
	else
		snprintf(buf, len, "%s status %d %ld", it->gw_pay_order_id, it->gw_status,
		         it->gw_amount);
}

static cJSON *item_json(const struct reconcile_item *it)
{
	cJSON *o = cJSON_CreateObject();

	out_json_add(o, "verdict:s kind:s mch_order_no:s customer_id:s",
	             reconcile_verdict_name(it->verdict), it->kind, it->mch_order_no,
	             it->customer_id);
	if (it->id)
		out_json_add(o, "id:I amount_cents:I state:s pay_order_id:s", it->id,
		             it->amount_cents, it->state, it->pay_order_id);
	out_json_add(o, "gateway:s",
	             it->gw_found < 0    ? "unknown"
	             : it->gw_found == 0 ? "absent"
	                                 : "found");
	if (it->gw_found == 1)
		out_json_add(o, "gateway_pay_order_id:s gateway_status:i gateway_amount_cents:I",
		             it->gw_pay_order_id, it->gw_status, (int64_t)it->gw_amount);
	out_json_add(o, "detail:s", it->detail);
	return o;
}

/* A reconcile.mismatch event per danger or mismatch, once per order number
 * and verdict however often the window is reconciled. */
static int emit_mismatches(PGconn *db, const struct reconcile_report *rep)
{
	char err[512], key[96];

	for (int i = 0; i < rep->n; i++) {
		const struct reconcile_item *it = &rep->items[i];
		cJSON *j;
		char *data;
		int rc;

		if (it->verdict != RECONCILE_DANGER && it->verdict != RECONCILE_MISMATCH)
			continue;
		snprintf(key, sizeof(key), "reconcile.mismatch:%s:%s:%s", it->kind,
		         it->mch_order_no, reconcile_verdict_name(it->verdict));
		j = item_json(it);
		data = cJSON_PrintUnformatted(j);
		cJSON_Delete(j);
		if (!data) {
			cli_error("out of memory");
			return -1;
		}
		rc = events_emit(db, "reconcile.mismatch", it->customer_id, data, key, err,
		                 sizeof(err));
		free(data);
		if (rc < 0) {
			cli_error("%s", err);
			return -1;
		}
	}
	return 0;
}

/* Open subscription charges queried and recorded as billingd does. */
static int resolve_open(struct cli *ctx, PGconn *db, struct gw_client *gw)
{
	struct sched *s = sched_new(&ctx->cfg, db, gw, ctx->actor);
	char err[512];

	if (!s || sched_resolve(s, ctx->now, NULL, err, sizeof(err)) < 0) {
		cli_error("%s", s ? err : "out of memory");
		sched_free(s);
		return -1;
	}
	sched_free(s);
	return 0;
}

int cmd_reconcile(struct cli *ctx, int argc, char **argv)
{
	const char *from_s = NULL, *to_s = NULL;
	int repair = 0;
	const struct out_opt opts[] = {
	    {"--from", &from_s, NULL}, {"--to", &to_s, NULL}, {"--repair", NULL, &repair}, {0}};
	const char *hdr[] = {"VERDICT", "KIND",    "MCH_ORDER_NO", "CUSTOMER",
	                     "OURS",    "GATEWAY", "DETAIL"};
	struct reconcile_opts ro = {.now = ctx->now};
	struct progress prog;
	struct reconcile_report rep;
	struct gw_client *gw;
	char err[512];
	PGconn *db;
	int clean;

	if (out_args(argc, argv, 1, opts, NULL, 0, 0, USAGE) < 0)
		return CLI_USAGE;
	if (out_parse_window(from_s, to_s, &ro.from, &ro.to, USAGE) < 0)
		return CLI_USAGE;
	if (out_connect(ctx, &db, &gw) < 0)
		return CLI_FAIL;
	/* Open subscription charges are resolved the daemon's way first, so that
	 * their subscriptions advance or step with the outcome. */
	if (resolve_open(ctx, db, gw) < 0)
		return CLI_FAIL;
	if (isatty(STDERR_FILENO)) {
		clock_gettime(CLOCK_MONOTONIC, &prog.start);
		prog.shown = prog.start;
		ro.progress = show_progress;
		ro.udata = &prog;
	}
	ro.repair = repair;
	if (reconcile_run(db, gw, &ctx->cfg, &ro, &rep, err, sizeof(err)) < 0)
		return out_fail(err);
	/* what --repair put back is recorded the daemon's way */
	if (repair && resolve_open(ctx, db, gw) < 0) {
		reconcile_report_free(&rep);
		return CLI_FAIL;
	}
	if (emit_mismatches(db, &rep) < 0) {
		reconcile_report_free(&rep);
		return CLI_FAIL;
	}
	clean = reconcile_clean(&rep);
	if (ctx->json) {
		cJSON *o = cJSON_CreateObject(), *counts = cJSON_AddObjectToObject(o, "counts");
		cJSON *cents = cJSON_AddObjectToObject(o, "cents");
		cJSON *items = cJSON_CreateArray();
		out_json_add(o, "from:s to:s clean:b", from_s, to_s, clean);
		for (int v = RECONCILE_DANGER; v <= RECONCILE_OK; v++) {
			cJSON_AddNumberToObject(counts, reconcile_verdict_name(v), rep.count[v]);
			cJSON_AddNumberToObject(cents, reconcile_verdict_name(v),
			                        (double)rep.cents[v]);
		}
		cJSON_AddNumberToObject(counts, "probed_absent", rep.probed);
		for (int i = 0; i < rep.n; i++)
			if (rep.items[i].verdict != RECONCILE_OK)
				cJSON_AddItemToArray(items, item_json(&rep.items[i]));
		cJSON_AddItemToObject(o, "items", items);
		out_json(o);
	} else {
		struct out_table *t = out_table_new(7, hdr);
		int listed = 0;
		char c[4][64];
		for (int i = 0; i < rep.n; i++) {
			const struct reconcile_item *it = &rep.items[i];
			char ours[128] = "-", gws[128];
			if (it->verdict == RECONCILE_OK)
				continue;
			if (it->id)
				snprintf(ours, sizeof(ours), "%s %s %lld", it->state,
				         it->pay_order_id[0] ? it->pay_order_id : "-",
				         (long long)it->amount_cents);
			gateway_side(it, gws, sizeof(gws));
			out_table_row(t, (const char *[]){reconcile_verdict_name(it->verdict),
			                                  it->kind, it->mch_order_no,
			                                  it->customer_id, ours, gws, it->detail});
			listed++;
		}
		if (listed)
			out_table_print(t, stdout);
		out_table_free(t);
		count_money(c[0], sizeof(c[0]), rep.count[RECONCILE_OK], "ok",
		            rep.cents[RECONCILE_OK]);
		count_money(c[1], sizeof(c[1]), rep.count[RECONCILE_RESOLVED], "resolved",
		            rep.cents[RECONCILE_RESOLVED]);
		count_money(c[2], sizeof(c[2]), rep.count[RECONCILE_MISMATCH], "mismatch",
		            rep.cents[RECONCILE_MISMATCH]);
		count_money(c[3], sizeof(c[3]), rep.count[RECONCILE_DANGER], "danger",
		            rep.cents[RECONCILE_DANGER]);
		printf("reconcile %s .. %s: %s, %s, %d open, %d unresolved, %s, %s; %d unused "
		       "numbers absent: %s\n",
		       from_s, to_s, c[0], c[1], rep.count[RECONCILE_OPEN],
		       rep.count[RECONCILE_UNRESOLVED], c[2], c[3], rep.probed,
		       clean ? "clean" : "NOT clean");
	}
	reconcile_report_free(&rep);
	return clean ? CLI_OK : CLI_FAIL;
}
