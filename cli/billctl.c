/* billctl: the admin command line. A verb with global options before or
 * after it; each verb lives in its own cmd_*.c and calls the core library.
 * Help, version and completion need no configuration. Exit codes: 0 ok,
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
	const char *what;
	const char *words; /* subcommands and options, for shell completion */
};

static const struct verb verbs[] = {
    {"migrate", cmd_migrate, 0, "migrate", "Applies the pending migrations.", ""},
    {"plans", cmd_plans, 1, "plans sync [--dry-run] | list",
     "Loads plans_dir into versioned plan rows (sync; --dry-run shows the new versions and "
     "price changes and writes nothing), or lists the current versions.",
     "sync list --dry-run"},
    {"customer", cmd_customer, 1,
     "customer enrol ID [--email E] [--name N] | update-card ID [--dry-run] | show ID | list "
     "[--expiring DAYS] | check ID | history ID",
     "Enrols a customer through the card page, sends a bound customer a card page for a new "
     "card (the card in use is charged until the new one is bound), shows, lists (cards "
     "expiring within DAYS), checks the binding at the gateway (exit 0 bound, 1 not), or "
     "shows one timeline of what happened to the customer, with actors and reasons.",
     "enrol update-card show list check history --email --name --expiring --dry-run"},
    {"subscribe", cmd_subscribe, 1,
     "subscribe CUSTOMER PLAN [--start T] [--trial-days N] [--when-bound] [--allow-duplicate] "
     "[--bill-arrears] [--dry-run]",
     "Subscribes a bound customer (a pending one with --when-bound) to the current version of "
     "a plan; a second live one of the plan only with --allow-duplicate; a start in the past "
     "bills the period containing now (every earlier one with --bill-arrears).",
     "--start --trial-days --when-bound --allow-duplicate --bill-arrears --dry-run"},
    {"subscription", cmd_subscription, 1,
     "subscription list [--customer C] [--state S] | show ID | cancel ID [--at-period-end] | "
     "keep ID | pause ID | resume ID | change-plan ID PLAN (changes take --dry-run)",
     "Lists, shows, cancels (now or at the period's end; keep withdraws that), pauses, "
     "resumes (paid time kept) a subscription, or changes its plan from the next period.",
     "list show cancel keep pause resume change-plan --customer --state --at-period-end "
     "--dry-run"},
    {"charge", cmd_charge, 1, "charge SUBSCRIPTION [--end-trial] [--dry-run]",
     "Charges what a subscription owes (a due or past_due period) now, through the daemon's "
     "protocol; --end-trial ends a trial and charges its first period.",
     "--end-trial --dry-run"},
    {"refund", cmd_refund, 1, "refund PAY_ORDER_ID [--amount CENTS] [--dry-run]",
     "Refunds a charge in full or in part (intent recorded before the gateway call).",
     "--amount --dry-run"},
    {"void", cmd_void, 1, "void PAY_ORDER_ID [--dry-run]", "Voids a charge of the same day.",
     "--dry-run"},
    {"pay-link", cmd_paylink, 1, "pay-link CUSTOMER AMOUNT_CENTS [--dry-run]",
     "Creates a one-off payment page and prints its URL.", "--dry-run"},
    {"query", cmd_query, 0, "query --pay-order-id X | --mch-order-no Y",
     "Asks the gateway about one order (cc_query).", "--pay-order-id --mch-order-no"},
    {"reconcile", cmd_reconcile, 1, "reconcile --from D --to D",
     "Checks every order number of the window at the gateway; exit 1 while mismatches "
     "remain.",
     "--from --to"},
    {"report", cmd_report, 1,
     "report [--month YYYY-MM | --from D --to D] [--format csv|json] [--totals] "
     "[--allow-open] | report summary [--month YYYY-MM | --from D --to D]",
     "One row per money movement of the window, for the accountants (exit 1 while the "
     "window has unknown outcomes, unless --allow-open); summary: per month and plan.",
     "summary --month --from --to --format --totals --allow-open"},
    {"events", cmd_events, 1,
     "events list [--type T] [--since T] [--status S] [--customer C] | show ID | replay ID | "
     "replay --since T [--type T] | tail",
     "Lists the events written for the operator's application, shows one with every delivery "
     "attempt, queues events to be sent again (same id), or follows new ones as they commit.",
     "list show replay tail --type --since --status --customer"},
};

#define NVERBS       (sizeof(verbs) / sizeof(verbs[0]))
#define GLOBAL_USAGE "billctl [-c FILE] [--json] [--now TIMESTAMP] [--reason TEXT] VERB ..."
/* The longest --reason: one line in the audit log. */
#define REASON_MAX 500

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
	if (db_set_now(ctx->db, ctx->now, err, sizeof(err)) < 0 ||
	    (ctx->reason && db_set_reason(ctx->db, ctx->reason, err, sizeof(err)) < 0)) {
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

	/* The merchant key is read here, by the verbs that call the gateway
	 * only: those that read the ledger run without access to it. A key or
	 * mch_id the gateway refuses is said in one line before anything is
	 * sent; a gateway that cannot be reached is left to the verb's call. */
	if (!ctx->gw) {
		if (cfg_load_key(&ctx->cfg, err, sizeof(err)) == 0)
			ctx->gw = gw_client_new(&ctx->cfg.gateway, err, sizeof(err));
		if (ctx->gw && gw_prove(ctx->gw, err, sizeof(err)) == GW_FAIL) {
			gw_client_free(ctx->gw);
			ctx->gw = NULL;
		}
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
	fprintf(f,
	        "usage: " GLOBAL_USAGE "\n"
	        "       billctl help VERB | VERB --help | completion bash | --version\n"
	        "options (before or after the verb):\n"
	        "  -c FILE          configuration (default: $BILLING_CONFIG, else ./billing.yaml\n"
	        "                   if it exists, else " CFG_SYSTEM_PATH ")\n"
	        "  --json           machine-readable output\n"
	        "  --now TIMESTAMP  the billing clock (default: $BILLING_NOW, else now)\n"
	        "  --reason TEXT    why: stored with every change in the audit log\n"
	        "verbs:\n");
	for (size_t i = 0; i < NVERBS; i++)
		fprintf(f, "  %s\n", verbs[i].usage);
}

static const struct verb *find_verb(const char *name)
{
	for (size_t v = 0; v < NVERBS; v++)
		if (strcmp(verbs[v].name, name) == 0)
			return &verbs[v];
	return NULL;
}

static int verb_help(const char *name)
{
	const struct verb *v = find_verb(name);

	if (strcmp(name, "help") == 0 || strcmp(name, "completion") == 0) {
		printf("usage: billctl help [VERB] | completion bash\n"
		       "Prints the usage of every verb or of one, or a bash completion script.\n");
		return CLI_OK;
	}
	if (!v) {
		cli_error("unknown verb '%s' (billctl --help lists them)", name);
		return CLI_USAGE;
	}
	printf("usage: billctl [-c FILE] [--json] [--now TIMESTAMP] [--reason TEXT] %s\n%s\n",
	       v->usage, v->what);
	return CLI_OK;
}

/* The completion script is made from the verb table, so that it never lags
 * behind the verbs. */
static int completion(int argc, char **argv)
{
	if (argc != 2 || strcmp(argv[1], "bash") != 0) {
		cli_error("usage: billctl completion bash");
		return CLI_USAGE;
	}
	printf("# bash completion for billctl (billctl completion bash)\n"
	       "_billctl() {\n"
	       "\tlocal cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}\n"
	       "\tlocal verb='' i words='-c --json --now --reason --help'\n"
	       "\tfor ((i = 1; i < COMP_CWORD; i++)); do\n"
	       "\t\tcase ${COMP_WORDS[i]} in\n"
	       "\t\t-c | --now | --reason) i=$((i + 1)) ;;\n"
	       "\t\t-*) ;;\n"
	       "\t\t*) verb=${COMP_WORDS[i]} && break ;;\n"
	       "\t\tesac\n"
	       "\tdone\n"
	       "\tif [ \"$prev\" = -c ]; then\n"
	       "\t\tmapfile -t COMPREPLY < <(compgen -f -- \"$cur\")\n"
	       "\t\treturn\n"
	       "\tfi\n"
	       "\tcase $verb in\n"
	       "\t'') words=\"$words --version help completion");
	for (size_t i = 0; i < NVERBS; i++)
		printf(" %s", verbs[i].name);
	printf("\" ;;\n\thelp) words=\"");
	for (size_t i = 0; i < NVERBS; i++)
		printf("%s%s", i ? " " : "", verbs[i].name);
	printf("\" ;;\n\tcompletion) words=bash ;;\n");
	for (size_t i = 0; i < NVERBS; i++)
		printf("\t%s) words=\"$words %s\" ;;\n", verbs[i].name, verbs[i].words);
	printf("\tesac\n"
	       "\tmapfile -t COMPREPLY < <(compgen -W \"$words\" -- \"$cur\")\n"
	       "}\n"
	       "complete -F _billctl billctl\n");
	return CLI_OK;
}

/* Takes the global options out of argv, wherever they are (before or after
 * the verb), leaving the verb and its arguments in argv[0..*argc). */
struct globals {
	const char *config, *now, *reason;
	int json, help, version;
};

static int take_globals(int *argc, char **argv, struct globals *g)
{
	int n = 0;

	for (int i = 0; i < *argc; i++) {
		const char *a = argv[i];

		if (strcmp(a, "--json") == 0) {
			g->json = 1;
		} else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			g->help = 1;
		} else if (strcmp(a, "--version") == 0) {
			g->version = 1;
		} else if (strcmp(a, "-c") == 0 || strcmp(a, "--now") == 0 ||
		           strcmp(a, "--reason") == 0) {
			if (i + 1 == *argc) {
				cli_error("%s: needs a value", a);
				return -1;
			}
			*(a[1] == 'c'   ? &g->config
			  : a[2] == 'n' ? &g->now
			                : &g->reason) = argv[++i];
		} else {
			argv[n++] = argv[i];
		}
	}
	*argc = n;
	return 0;
}

/* A reason is one printable line that says something. */
static int valid_reason(const char *r)
{
	size_t n = strlen(r), blank = strspn(r, " ");

	for (size_t i = 0; i < n; i++)
		if ((unsigned char)r[i] < 0x20 || r[i] == 0x7f) {
			cli_error("--reason: a control character at byte %zu (one line of text)",
			          i + 1);
			return -1;
		}
	if (blank == n || n > REASON_MAX) {
		cli_error("--reason: %s", blank == n ? "empty" : "longer than 500 bytes");
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct cli ctx;
	struct globals g = {NULL, getenv("BILLING_NOW"), NULL, 0, 0, 0};
	char err[512];
	struct passwd *pw = getpwuid(getuid());
	const char *config;
	int rc;

	memset(&ctx, 0, sizeof(ctx));
	argc--;
	argv++;
	if (take_globals(&argc, argv, &g) < 0) {
		usage(stderr);
		return CLI_USAGE;
	}
	if (g.version) {
		printf("billctl %s\n", BILLING_VERSION);
		return CLI_OK;
	}
	if (argc == 0 || (g.help && strcmp(argv[0], "help") == 0)) {
		usage(g.help ? stdout : stderr);
		return g.help ? CLI_OK : CLI_USAGE;
	}
	if (strcmp(argv[0], "help") == 0) {
		if (argc > 2) {
			cli_error("usage: billctl help [VERB]");
			return CLI_USAGE;
		}
		if (argc == 1)
			usage(stdout);
		return argc == 1 ? CLI_OK : verb_help(argv[1]);
	}
	if (strcmp(argv[0], "completion") == 0)
		return g.help ? verb_help(argv[0]) : completion(argc, argv);
	current = find_verb(argv[0]);
	if (!current && argv[0][0] == '-') {
		cli_error("unknown option '%s'", argv[0]);
		usage(stderr);
		return CLI_USAGE;
	}
	if (!current) {
		cli_error("unknown verb '%s' (billctl --help lists them)", argv[0]);
		return CLI_USAGE;
	}
	if (g.help)
		return verb_help(argv[0]);
	ctx.json = g.json;
	config = cfg_find_path(g.config);
	if (cfg_load_without_key(&ctx.cfg, config, err, sizeof(err)) < 0) {
		cli_error("%s", err);
		return CLI_USAGE;
	}
	ctx.now = (int64_t)time(NULL);
	if (g.now && g.now[0] && cal_parse_time(g.now, &ctx.now, err, sizeof(err)) < 0) {
		cli_error("--now: %s", err);
		return CLI_USAGE;
	}
	if (g.reason && valid_reason(g.reason) < 0)
		return CLI_USAGE;
	ctx.reason = g.reason;
	snprintf(ctx.actor, sizeof(ctx.actor), "billctl:%s", pw ? pw->pw_name : "unknown");
	log_set_quiet(1);
	rc = current->run(&ctx, argc, argv);
	gw_client_free(ctx.gw);
	PQfinish(ctx.db);
	return rc;
}
