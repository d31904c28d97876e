/* cmd_events.c: billctl events list|show|replay|tail: the outbox of events
 * for the operator's application, its delivery attempts, sending again, and
 * following new events as they commit (LISTEN/NOTIFY). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "events.h"
#include "out.h"

#define USAGE                                                                                      \
	"usage: billctl events list [--type T] [--since T] [--status pending|delivered|failed] "   \
	"[--customer ID] | show EVENT_ID | replay EVENT_ID | replay --since T [--type T] | tail"

static cJSON *row_json(const void *item)
{
	const struct events_row *e = item;
	cJSON *o = cJSON_CreateObject();

	out_json_add(o, "id:s type:s customer_id:s seq:I created:t status:s attempts:i body:j",
	             e->event_id, e->type, e->customer_id, e->seq, e->created, e->status,
	             e->attempts, cJSON_Parse(e->body));
	return o;
}

static void row_cells(const struct events_row *e, char created[64], char seq[24], char att[16],
                      const char *cells[7])
{
	out_time(e->created, created, 64);
	snprintf(seq, 24, "%lld", (long long)e->seq);
	snprintf(att, 16, "%d", e->attempts);
	cells[0] = created;
	cells[1] = e->event_id;
	cells[2] = e->type;
	cells[3] = e->customer_id[0] ? e->customer_id : "-";
	cells[4] = seq;
	cells[5] = e->status;
	cells[6] = att;
}

static const char *const HEADERS[] = {"CREATED", "ID",     "TYPE",    "CUSTOMER",
                                      "SEQ",     "STATUS", "ATTEMPTS"};

static void row_to_table(struct out_table *t, const void *item)
{
	char created[64], seq[24], att[16];
	const char *cells[7];

	row_cells(item, created, seq, att, cells);
	out_table_row(t, cells);
}

static int check_status(const char *s)
{
	if (!s || strcmp(s, "pending") == 0 || strcmp(s, "delivered") == 0 ||
	    strcmp(s, "failed") == 0)
		return 0;
	cli_error("--status: '%s' is not pending, delivered or failed", s);
	return -1;
}

static int list(struct cli *ctx, int argc, char **argv)
{
	const char *since = NULL;
	struct events_filter f = {0};
	const struct out_opt opts[] = {{"--type", &f.type, NULL},
	                               {"--since", &since, NULL},
	                               {"--status", &f.status, NULL},
	                               {"--customer", &f.customer, NULL},
	                               {0}};
	struct events_row *rows;
	char err[512];
	PGconn *db;
	int n;

	if (out_args(argc, argv, 2, opts, NULL, 0, 0, USAGE) < 0)
		return CLI_USAGE;
	if (check_status(f.status) < 0 || (since && out_parse_time("--since", since, &f.since) < 0))
		return CLI_USAGE;
	if (!(db = cli_db(ctx)))
		return CLI_FAIL;
	if (events_list(db, &f, &rows, &n, err, sizeof(err)) < 0)
		return out_fail(err);
	out_list(ctx, rows, n, sizeof(*rows), row_json, 7, HEADERS, row_to_table);
	events_rows_free(rows, n);
	return CLI_OK;
}

static int show(struct cli *ctx, int argc, char **argv)
{
	const char *id;
	struct events_row e;
	struct events_attempt *att;
	char err[512], t[64];
	PGconn *db;
	int n;

	if (out_args(argc, argv, 2, NULL, &id, 1, 1, USAGE) < 0)
		return CLI_USAGE;
	if (!(db = cli_db(ctx)))
		return CLI_FAIL;
	if (events_show(db, id, &e, &att, &n, err, sizeof(err)) < 0)
		return out_fail(err);
	if (ctx->json) {
		cJSON *o = row_json(&e), *a = cJSON_AddArrayToObject(o, "deliveries");
		for (int i = 0; i < n; i++) {
			cJSON *d = cJSON_CreateObject();
			out_json_time(d, "at", att[i].at);
			if (att[i].http_status)
				cJSON_AddNumberToObject(d, "http_status", att[i].http_status);
			else
				cJSON_AddNullToObject(d, "http_status");
			out_json_add(d, "latency_ms:i error:s by:s", att[i].latency_ms,
			             att[i].error, att[i].owner);
			cJSON_AddItemToArray(a, d);
		}
		out_json(o);
	} else {
		const char *hdr[] = {"AT", "HTTP", "LATENCY_MS", "ERROR", "BY"};
		struct out_table *tb = out_table_new(5, hdr);
		out_time(e.created, t, sizeof(t));
		printf("event     %s\ntype      %s\ncustomer  %s\nseq       %lld\ncreated   %s\n"
		       "status    %s\nbody      %s\n\n",
		       e.event_id, e.type, e.customer_id[0] ? e.customer_id : "-", (long long)e.seq,
		       t, e.status, e.body);
		for (int i = 0; i < n; i++) {
			char at[64], http[16], lat[16];
			const char *cells[5] = {at, http, lat, att[i].error[0] ? att[i].error : "-",
			                        att[i].owner};
			out_time(att[i].at, at, sizeof(at));
			snprintf(http, sizeof(http), "%d", att[i].http_status);
			if (!att[i].http_status)
				snprintf(http, sizeof(http), "-");
			snprintf(lat, sizeof(lat), "%d", att[i].latency_ms);
			out_table_row(tb, cells);
		}
		if (n)
			out_table_print(tb, stdout);
		else
			printf("no delivery attempt yet\n");
		out_table_free(tb);
	}
	free(e.body);
	free(att);
	return CLI_OK;
}

static int replay(struct cli *ctx, int argc, char **argv)
{
	const char *id = NULL, *since = NULL;
	struct events_filter f = {0};
	const struct out_opt opts[] = {{"--since", &since, NULL}, {"--type", &f.type, NULL}, {0}};
	char err[512];
	PGconn *db;
	int n, npos;

	npos = out_args(argc, argv, 2, opts, &id, 0, 1, USAGE);
	if (npos < 0)
		return CLI_USAGE;
	if ((npos == 1) == (since != NULL) || (npos == 1 && f.type)) {
		cli_error("either an EVENT_ID or --since T [--type T] (%s)", USAGE);
		return CLI_USAGE;
	}
	if (since && out_parse_time("--since", since, &f.since) < 0)
		return CLI_USAGE;
	if (!(db = cli_db(ctx)))
		return CLI_FAIL;
	if (events_replay(db, npos ? id : NULL, &f, &n, err, sizeof(err)) < 0)
		return out_fail(err);
	if (ctx->json) {
		cJSON *o = cJSON_CreateObject();
		cJSON_AddNumberToObject(o, "queued", n);
		out_json(o);
	} else {
		printf("replay: %d event%s queued to be sent again\n", n, n == 1 ? "" : "s");
	}
	return CLI_OK;
}

static volatile sig_atomic_t interrupted;

static void on_interrupt(int sig)
{
	(void)sig;
	interrupted = 1;
}

/* Follows events as they commit, one line each (--json: the body), until
 * SIGINT or SIGTERM. Starts after the newest event already written. */
static int tail(struct cli *ctx, int argc, char **argv)
{
	struct events_filter f = {.after_id = 0, .limit = 1000};
	struct sigaction sa;
	char err[512];
	PGconn *db;
	int first = 1;

	if (out_args(argc, argv, 2, NULL, NULL, 0, 0, USAGE) < 0)
		return CLI_USAGE;
	if (!(db = cli_db(ctx)))
		return CLI_FAIL;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_interrupt;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	if (events_listen(db, err, sizeof(err)) < 0)
		return out_fail(err);
	setvbuf(stdout, NULL, _IOLBF, 0);
	while (!interrupted) {
		struct events_row *rows;
		int n;

		if (events_list(db, &f, &rows, &n, err, sizeof(err)) < 0) {
			cli_error("%s", err);
			return CLI_FAIL;
		}
		for (int i = 0; i < n; i++) {
			char created[64], seq[24], att[16];
			const char *c[7];
			f.after_id = rows[i].id;
			if (first)
				continue;
			row_cells(&rows[i], created, seq, att, c);
			if (ctx->json)
				printf("%s\n", rows[i].body);
			else
				printf("%s  %s  %s  customer=%s seq=%s\n", c[0], c[1], c[2], c[3],
				       c[4]);
		}
		events_rows_free(rows, n);
		if (n == f.limit)
			continue; /* more already there */
		first = 0;
		if (events_wait(db, 1000) < 0) {
			cli_error("the database connection was lost");
			return CLI_FAIL;
		}
	}
	return CLI_OK;
}

int cmd_events(struct cli *ctx, int argc, char **argv)
{
	static const struct out_sub subs[] = {
	    {"list", list}, {"show", show}, {"replay", replay}, {"tail", tail}, {NULL, NULL}};

	return out_dispatch(ctx, argc, argv, subs, USAGE);
}
