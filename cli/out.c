/* out.c: presentation and argument parsing shared by billctl's verbs. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "calendar.h"
#include "out.h"

void out_money(int64_t cents, char *buf, size_t len)
{
	/* Unsigned so that INT64_MIN has a magnitude too. */
	uint64_t mag = cents < 0 ? (uint64_t)0 - (uint64_t)cents : (uint64_t)cents;

	snprintf(buf, len, "%s%" PRIu64 ".%02" PRIu64, cents < 0 ? "-" : "", mag / 100, mag % 100);
}

void out_time(int64_t t, char *buf, size_t len)
{
	if (t == 0)
		snprintf(buf, len, "-");
	else
		cal_format(t, buf, len);
}

struct out_table {
	int ncols, nrows, cap;
	char **cells; /* nrows + 1 rows (the headers first) of ncols */
};

static char *dup_or_die(const char *s)
{
	char *d = strdup(s ? s : "");

	if (!d)
		abort(); /* a half-printed table would mislead */
	return d;
}

struct out_table *out_table_new(int ncols, const char *const *headers)
{
	struct out_table *t = calloc(1, sizeof(*t));

	if (!t)
		abort();
	t->ncols = ncols;
	out_table_row(t, headers);
	return t;
}

void out_table_row(struct out_table *t, const char *const *cells)
{
	if (t->nrows == t->cap) {
		int cap = t->cap ? t->cap * 2 : 16;
		char **grown = realloc(t->cells, (size_t)cap * (size_t)t->ncols * sizeof(*grown));
		if (!grown)
			abort();
		t->cells = grown;
		t->cap = cap;
	}
	for (int c = 0; c < t->ncols; c++)
		t->cells[t->nrows * t->ncols + c] = dup_or_die(cells[c]);
	t->nrows++;
}

void out_table_print(const struct out_table *t, FILE *f)
{
	int *width = calloc((size_t)t->ncols, sizeof(*width));

	if (!width)
		abort();
	for (int r = 0; r < t->nrows; r++)
		for (int c = 0; c < t->ncols; c++) {
			int w = (int)strlen(t->cells[r * t->ncols + c]);
			if (w > width[c])
				width[c] = w;
		}
	for (int r = 0; r < t->nrows; r++) {
		for (int c = 0; c < t->ncols; c++) {
			const char *cell = t->cells[r * t->ncols + c];
			if (c == t->ncols - 1)
				fputs(cell, f);
			else
				fprintf(f, "%-*s  ", width[c], cell);
		}
		fputc('\n', f);
	}
	free(width);
}

void out_table_free(struct out_table *t)
{
	if (!t)
		return;
	for (int i = 0; i < t->nrows * t->ncols; i++)
		free(t->cells[i]);
	free(t->cells);
	free(t);
}

void out_csv_field(FILE *f, const char *s, int is_text)
{
	int guard = is_text && s[0] && strchr("=+-@\t\r", s[0]);

	if (!guard && !strpbrk(s, ",\"\r\n")) {
		fputs(s, f);
		return;
	}
	fputc('"', f);
	if (guard)
		fputc('\'', f);
	for (; *s; s++) {
		if (*s == '"')
			fputc('"', f);
		fputc(*s, f);
	}
	fputc('"', f);
}

void out_csv_end(FILE *f)
{
	fputs("\r\n", f);
}

void out_json(cJSON *j)
{
	char *s = cJSON_PrintUnformatted(j);

	if (!s)
		abort();
	puts(s);
	free(s);
	cJSON_Delete(j);
}

void out_json_list(const void *items, int n, size_t size, cJSON *(*to_json)(const void *item))
{
	cJSON *a = cJSON_CreateArray();

	for (int i = 0; i < n; i++)
		cJSON_AddItemToArray(a, to_json((const char *)items + (size_t)i * size));
	out_json(a);
}

void out_list(const struct cli *ctx, const void *items, int n, size_t size,
              cJSON *(*to_json)(const void *item), int ncols, const char *const *headers,
              void (*to_row)(struct out_table *t, const void *item))
{
	struct out_table *t;

	if (ctx->json) {
		out_json_list(items, n, size, to_json);
		return;
	}
	t = out_table_new(ncols, headers);
	for (int i = 0; i < n; i++)
		to_row(t, (const char *)items + (size_t)i * size);
	out_table_print(t, stdout);
	out_table_free(t);
}

void out_json_money(cJSON *o, int64_t cents)
{
	out_json_add(o, "amount:m", cents);
}

void out_json_time(cJSON *o, const char *key, int64_t t)
{
	char buf[40];

	if (t == 0) {
		cJSON_AddNullToObject(o, key);
		return;
	}
	cal_format(t, buf, sizeof(buf));
	cJSON_AddStringToObject(o, key, buf);
}

void out_json_add(cJSON *o, const char *spec, ...)
{
	char key[64], money[32];
	const char *p = spec;
	va_list ap;

	va_start(ap, spec);
	while (*p) {
		size_t n = strcspn(p, ":");
		char type;
		const char *s;
		cJSON *item;
		int64_t v;

		/* A malformed spec is a programming error, caught by any test. */
		if (!p[n] || n >= sizeof(key) - sizeof("_cents"))
			abort();
		memcpy(key, p, n);
		key[n] = 0;
		type = p[n + 1];
		switch (type) {
		case 's':
			s = va_arg(ap, const char *);
			if (s)
				cJSON_AddStringToObject(o, key, s);
			else
				cJSON_AddNullToObject(o, key);
			break;
		case 'i':
			cJSON_AddNumberToObject(o, key, va_arg(ap, int));
			break;
		case 'I':
			cJSON_AddNumberToObject(o, key, (double)va_arg(ap, int64_t));
			break;
		case 'b':
			cJSON_AddBoolToObject(o, key, va_arg(ap, int));
			break;
		case 't':
			out_json_time(o, key, va_arg(ap, int64_t));
			break;
		case 'm':
			v = va_arg(ap, int64_t);
			out_money(v, money, sizeof(money));
			strcat(key, "_cents");
			cJSON_AddNumberToObject(o, key, (double)v);
			key[n] = 0;
			cJSON_AddStringToObject(o, key, money);
			break;
		case 'j':
			item = va_arg(ap, cJSON *);
			cJSON_AddItemToObject(o, key, item ? item : cJSON_CreateNull());
			break;
		default:
			abort();
		}
		p += n + 2;
		p += strspn(p, " ");
	}
	va_end(ap);
}

/* Whole decimal integer in [min, max]. */
static int parse_range(const char *s, int64_t min, int64_t max, int64_t *v)
{
	char *end;
	long long x;

	if (!s || !*s || (*s != '-' && (*s < '0' || *s > '9')))
		return -1;
	errno = 0;
	x = strtoll(s, &end, 10);
	if (errno || *end || x < min || x > max)
		return -1;
	*v = x;
	return 0;
}

int out_connect(struct cli *ctx, PGconn **db, struct gw_client **gw)
{
	*db = cli_db(ctx);
	*gw = *db ? cli_gw(ctx) : NULL;
	return *gw ? 0 : -1;
}

int out_fail(const char *err)
{
	cli_error("%s", err);
	return CLI_FAIL;
}

int out_parse_id(const char *what, const char *s, int64_t *v)
{
	if (parse_range(s, 1, INT64_MAX, v) == 0)
		return 0;
	cli_error("%s: '%s' is not an id (a positive integer)", what, s);
	return -1;
}

int out_parse_cents(const char *what, const char *s, int64_t *v)
{
	if (parse_range(s, 1, INT32_MAX, v) == 0)
		return 0;
	cli_error("%s: '%s' is not an amount in cents (an integer from 1 to %d)", what, s,
	          INT32_MAX);
	return -1;
}

int out_parse_int(const char *what, const char *s, int min, int max, int *v)
{
	int64_t x;

	if (parse_range(s, min, max, &x) == 0) {
		*v = (int)x;
		return 0;
	}
	cli_error("%s: '%s' is not an integer from %d to %d", what, s, min, max);
	return -1;
}

int out_parse_time(const char *what, const char *s, int64_t *t)
{
	char err[256];

	if (cal_parse_time(s, t, err, sizeof(err)) == 0)
		return 0;
	cli_error("%s: %s", what, err);
	return -1;
}

int out_parse_window(const char *from_s, const char *to_s, int64_t *from, int64_t *to,
                     const char *usage)
{
	static const struct cal_duration day = {1, 'd'};

	if (!from_s || !to_s) {
		cli_error("--from and --to are required (%s)", usage);
		return -1;
	}
	if (out_parse_time("--from", from_s, from) < 0 || out_parse_time("--to", to_s, to) < 0)
		return -1;
	/* A bare date (YYYY-MM-DD) covers its whole day. */
	*to = strlen(to_s) == 10 ? cal_add(*to, day) : *to + 1;
	if (*to <= *from) {
		cli_error("--to %s is before --from %s", to_s, from_s);
		return -1;
	}
	return 0;
}

int out_parse_period(const char *month_s, const char *from_s, const char *to_s, int64_t *from,
                     int64_t *to)
{
	char first[24];
	int y, m, used = 0;

	if (!month_s) {
		if (!from_s || !to_s) {
			cli_error("give --month YYYY-MM or both --from and --to");
			return -1;
		}
		return out_parse_window(from_s, to_s, from, to, "");
	}
	if (from_s || to_s) {
		cli_error("--month %s: give either --month or --from/--to", month_s);
		return -1;
	}
	if (strlen(month_s) != 7 || sscanf(month_s, "%4d-%2d%n", &y, &m, &used) != 2 || used != 7 ||
	    y < 1970 || m < 1 || m > 12 || month_s[4] != '-') {
		cli_error("--month: '%s' is not a month (YYYY-MM)", month_s);
		return -1;
	}
	snprintf(first, sizeof(first), "%04d-%02d-01", y, m);
	if (out_parse_time("--month", first, from) < 0)
		return -1;
	*to = cal_period_start(*from, CAL_MONTH, 1, 1);
	return 0;
}

int out_args(int argc, char **argv, int first, const struct out_opt *opts, const char **pos,
             int minpos, int maxpos, const char *usage)
{
	int npos = 0;

	for (int i = first; i < argc; i++) {
		const struct out_opt *o = NULL;

		if (argv[i][0] != '-' || argv[i][1] == '\0') {
			if (npos == maxpos) {
				cli_error("unexpected argument '%s' (%s)", argv[i], usage);
				return -1;
			}
			pos[npos++] = argv[i];
			continue;
		}
		for (int k = 0; opts && opts[k].name; k++)
			if (strcmp(opts[k].name, argv[i]) == 0)
				o = &opts[k];
		if (!o) {
			cli_error("unknown option '%s' (%s)", argv[i], usage);
			return -1;
		}
		if (o->flag) {
			*o->flag = 1;
		} else if (i + 1 < argc) {
			*o->value = argv[++i];
		} else {
			cli_error("option %s needs a value (%s)", argv[i], usage);
			return -1;
		}
	}
	if (npos < minpos) {
		cli_error("missing argument (%s)", usage);
		return -1;
	}
	return npos;
}

int out_dispatch(struct cli *ctx, int argc, char **argv, const struct out_sub *subs,
                 const char *usage)
{
	for (int i = 0; argc >= 2 && subs[i].name; i++)
		if (strcmp(argv[1], subs[i].name) == 0)
			return subs[i].run(ctx, argc, argv);
	if (argc >= 2)
		cli_error("unknown subcommand '%s %s' (%s)", argv[0], argv[1], usage);
	else
		cli_error("%s", usage);
	return CLI_USAGE;
}
