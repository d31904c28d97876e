/* billctl: the admin command line. Global options, then a verb; each verb
 * lives in its own cmd_*.c and calls the core library. Exit codes: 0 ok,
 * 1 failed, 2 usage error. */
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "calendar.h"
#include "cli.h"
#include "db.h"
#include "log.h"
#include "migrate.h"

struct verb {
	const char *name;
	int (*run)(struct cli *ctx, int argc, char **argv);
	int needs_schema; /* refuse to run against an older schema */
	const char *usage;
};

static const struct verb verbs[] = {
    {"migrate", cmd_migrate, 0, "migrate"},
    {"plans", cmd_plans, 1, "plans sync|list"},
    {"customer", cmd_customer, 1,
     "customer enrol ID [--email E] [--name N] | show ID | list [--expiring DAYS] | check ID"},
    {"subscribe", cmd_subscribe, 1, "subscribe CUSTOMER PLAN [--start T] [--trial-days N]"},
    {"subscription", cmd_subscription, 1,
     "subscription list [--customer C] [--state S] | show ID | cancel ID [--at-period-end] | "
     "pause ID | resume ID | change-plan ID PLAN"},
    {"charge", cmd_charge, 1, "charge SUBSCRIPTION"},
    {"refund", cmd_refund, 1, "refund PAY_ORDER_ID [--amount CENTS]"},
    {"void", cmd_void, 1, "void PAY_ORDER_ID"},
    {"pay-link", cmd_paylink, 1, "pay-link CUSTOMER AMOUNT_CENTS"},
    {"query", cmd_query, 0, "query --pay-order-id X | --mch-order-no Y"},
    {"reconcile", cmd_reconcile, 1, "reconcile --from D --to D"},
    {"report", cmd_report, 1, "report --from D --to D [--format csv|json] [--totals]"},
    {"events", cmd_events, 1,
     "events list [--type T] [--since T] [--status S] [--customer C] | show ID | "
     "replay ID | replay --since T [--type T] | tail"},
};

void cli_error(const char *fmt, ...)
{
	va_list ap;

	fputs("billctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static const struct verb *current;

PGconn *cli_db(struct cli *ctx)
{
	char err[512];

	if (ctx->db)
		return ctx->db;
	ctx->db = db_connect(ctx->cfg.database_url, ctx->actor, err, sizeof(err));
	if (!ctx->db) {
		cli_error("%s", err);
		return NULL;
	}
	if (db_set_now(ctx->db, ctx->now, err, sizeof(err)) < 0) {
		cli_error("%s", err);
		PQfinish(ctx->db);
		ctx->db = NULL;
		return NULL;
	}
	if (current && current->needs_schema &&
	    migrate_check(ctx->db, migrate_embedded, migrate_embedded_count, err, sizeof(err)) <
	        0) {
		cli_error("%s", err);
		PQfinish(ctx->db);
		ctx->db = NULL;
	}
	return ctx->db;
}

struct gw_client *cli_gw(struct cli *ctx)
{
	char err[512];

	if (!ctx->gw) {
		ctx->gw = gw_client_new(&ctx->cfg.gateway, err, sizeof(err));
		if (!ctx->gw)
			cli_error("%s", err);
	}
	return ctx->gw;
}

int cmd_migrate(struct cli *ctx, int argc, char **argv)
{
	char err[512];
	int applied;
	PGconn *db;

	(void)argv;
	if (argc != 1) {
		cli_error("usage: billctl migrate");
		return CLI_USAGE;
	}
	db = cli_db(ctx);
	if (!db)
		return CLI_FAIL;
	if (migrate_apply(db, migrate_embedded, migrate_embedded_count, &applied, err,
	                  sizeof(err)) < 0) {
		cli_error("%s", err);
		return CLI_FAIL;
	}
	if (ctx->json)
		printf("{\"applied\":%d,\"migrations\":%d}\n", applied, migrate_embedded_count);
	else
		printf("migrate: %d applied, %d in all, schema current\n", applied,
		       migrate_embedded_count);
	return CLI_OK;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: billctl [-c FILE] [--json] [--now TIMESTAMP] VERB ...\nverbs:\n");
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
		fprintf(f, "  %s\n", verbs[i].usage);
}

int main(int argc, char **argv)
{
	struct cli ctx;
	const char *config = "billing.yaml", *now = getenv("BILLING_NOW");
	char err[512];
	struct passwd *pw = getpwuid(getuid());
	int i, rc;

	memset(&ctx, 0, sizeof(ctx));
	for (i = 1; i < argc && argv[i][0] == '-'; i++) {
		if (strcmp(argv[i], "--json") == 0) {
			ctx.json = 1;
		} else if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--now") == 0) &&
		           i + 1 < argc) {
			if (argv[i][1] == 'c')
				config = argv[++i];
			else
				now = argv[++i];
		} else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			usage(stdout);
			return CLI_OK;
		} else {
			cli_error("unknown option '%s'", argv[i]);
			usage(stderr);
			return CLI_USAGE;
		}
	}
	if (i == argc) {
		usage(stderr);
		return CLI_USAGE;
	}
	for (size_t v = 0; v < sizeof(verbs) / sizeof(verbs[0]); v++)
		if (strcmp(verbs[v].name, argv[i]) == 0)
			current = &verbs[v];
	if (!current) {
		cli_error("unknown verb '%s' (billctl --help lists them)", argv[i]);
		return CLI_USAGE;
	}
	if (cfg_load(&ctx.cfg, config, err, sizeof(err)) < 0) {
		cli_error("%s", err);
		return CLI_USAGE;
	}
	ctx.now = (int64_t)time(NULL);
	if (now && now[0] && cal_parse_time(now, &ctx.now, err, sizeof(err)) < 0) {
		cli_error("--now: %s", err);
		return CLI_USAGE;
	}
	snprintf(ctx.actor, sizeof(ctx.actor), "billctl:%s", pw ? pw->pw_name : "unknown");
	log_set_quiet(1);
	rc = current->run(&ctx, argc - i, argv + i);
	gw_client_free(ctx.gw);
	PQfinish(ctx.db);
	return rc;
}
