/* cli.h: what every billctl verb gets: the loaded configuration, output mode,
 * the clock, and lazily opened database and gateway connections. */
#ifndef CLI_H
#define CLI_H

#include <stdint.h>
#include <libpq-fe.h>

#include "config.h"
#include "gateway.h"

enum { CLI_OK = 0, CLI_FAIL = 1, CLI_USAGE = 2 };

struct cli {
	struct cfg cfg;
	int json;           /* --json: machine-readable output */
	int64_t now;        /* --now or BILLING_NOW, else the real time */
	char actor[96];     /* "billctl:<user>" for the audit log */
	const char *reason; /* --reason: why, for the audit log; NULL when not given */
	PGconn *db;
	struct gw_client *gw;
};

/* The database connection (opened on first use, schema checked); NULL after
 * printing one error line. */
PGconn *cli_db(struct cli *ctx);
/* The gateway client (created on first use); NULL after printing the error. */
struct gw_client *cli_gw(struct cli *ctx);
/* Prints "billctl: <message>" on stderr. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A verb: argv[0] is the verb itself; returns CLI_OK, CLI_FAIL or CLI_USAGE. */
typedef int cli_verb(struct cli *ctx, int argc, char **argv);
cli_verb cmd_migrate, cmd_plans, cmd_customer, cmd_subscribe, cmd_subscription, cmd_charge,
    cmd_refund, cmd_void, cmd_paylink, cmd_query, cmd_reconcile, cmd_report, cmd_events;
cli_verb cmd_report_summary; /* argv[0]: "summary" */

#endif
