/* out.h: what billctl's verbs share: presentation (aligned tables, JSON
 * documents, money as "12.34", local times) and the parsing of their
 * arguments (ids, cents, times), so that every verb reads and prints alike. */
#ifndef OUT_H
#define OUT_H

#include <stdint.h>
#include <stdio.h>
#include <cjson/cJSON.h>

#include "cli.h"

/* Cents as dollars with two decimals: 1234 -> "12.34", -5 -> "-0.05". */
void out_money(int64_t cents, char *buf, size_t len);
/* Local ISO 8601 time, or "-" for 0 (no time). */
void out_time(int64_t t, char *buf, size_t len);

/* A table printed with its columns aligned; cells are copied. */
struct out_table;
struct out_table *out_table_new(int ncols, const char *const *headers);
void out_table_row(struct out_table *t, const char *const *cells);
void out_table_print(const struct out_table *t, FILE *f);
void out_table_free(struct out_table *t);

/* One RFC 4180 CSV field (quoted when it holds a comma, quote, CR or LF;
 * quotes doubled). A text field starting with = + - @ TAB or CR, which a
 * spreadsheet would run as a formula, is prefixed with ' (and quoted). */
void out_csv_field(FILE *f, const char *s, int is_text);
/* Ends a CSV record (CRLF). */
void out_csv_end(FILE *f);

/* Prints j on one line on stdout and frees it. */
void out_json(cJSON *j);
/* Prints n items (size bytes apart from items) as one JSON array of
 * to_json(item) on stdout. */
void out_json_list(const void *items, int n, size_t size, cJSON *(*to_json)(const void *item));
/* A listing: the n items (size bytes apart) as one JSON array of
 * to_json(item) under --json, else as a table of ncols headers with one
 * to_row(t, item) each. */
void out_list(const struct cli *ctx, const void *items, int n, size_t size,
              cJSON *(*to_json)(const void *item), int ncols, const char *const *headers,
              void (*to_row)(struct out_table *t, const void *item));
/* Adds "amount_cents" and "amount" ("12.34"). */
void out_json_money(cJSON *o, int64_t cents);
/* Adds a time as local ISO 8601 (null for 0). */
void out_json_time(cJSON *o, const char *key, int64_t t);
/* Adds the fields of spec, "key:type ..." separated by spaces, with one
 * argument each: s const char * (NULL: null), i int, I int64_t, b int as a
 * boolean, t int64_t time as out_json_time, m int64_t cents as "key" ("12.34")
 * and "key_cents", j cJSON * taken over (NULL: null). */
void out_json_add(cJSON *o, const char *spec, ...);

/* The database and the gateway client (cli_db, cli_gw): 0, or -1 after
 * printing why. */
int out_connect(struct cli *ctx, PGconn **db, struct gw_client **gw);
/* Prints err as one error line; returns CLI_FAIL. */
int out_fail(const char *err);

/* Argument parsers: 0, or -1 after printing one error line naming what (an
 * option or argument name) and the bad value. */
int out_parse_id(const char *what, const char *s, int64_t *v);
int out_parse_cents(const char *what, const char *s, int64_t *v); /* 1 .. INT32_MAX */
int out_parse_int(const char *what, const char *s, int min, int max, int *v);
int out_parse_time(const char *what, const char *s, int64_t *t);

/* --from D --to D (both required: usage is shown when one is missing):
 * [*from, *to) where a date D means its whole local day (to is then the
 * next local midnight) and a time is taken as given (to inclusive). 0, or
 * -1 after one error line. */
int out_parse_window(const char *from_s, const char *to_s, int64_t *from, int64_t *to,
                     const char *usage);

/* --month YYYY-MM (its local days) or --from D --to D (out_parse_window),
 * exactly one of the two. 0, or -1 after one error line. */
int out_parse_period(const char *month_s, const char *from_s, const char *to_s, int64_t *from,
                     int64_t *to);

/* A verb's options: --name VALUE (value set) or --name (flag set to 1). */
struct out_opt {
	const char *name;
	const char **value;
	int *flag;
};
/* Splits argv[first..argc) into the options of opts (NULL, or ended by a
 * NULL name) and minpos to maxpos positional arguments (into pos). Returns
 * how many positional arguments there are, or -1 after one error line
 * ending with usage (an unknown option, a missing value, a wrong count). */
int out_args(int argc, char **argv, int first, const struct out_opt *opts, const char **pos,
             int minpos, int maxpos, const char *usage);

/* A verb's subcommands (a NULL name ends them): runs the one named by
 * argv[1] with the verb's argc/argv, or prints usage and returns CLI_USAGE. */
struct out_sub {
	const char *name;
	int (*run)(struct cli *ctx, int argc, char **argv);
};
int out_dispatch(struct cli *ctx, int argc, char **argv, const struct out_sub *subs,
                 const char *usage);

#endif
