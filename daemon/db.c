/* db.c: libpq connection and parameterised query helpers.
 *
 * Every error becomes one line: libpq's messages span several lines, and a
 * caller prints ours as "billctl: <line>". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"

static _Thread_local char last_sqlstate[6];

/* First non-empty line of a libpq message, without "ERROR:  " noise. */
static void one_line(char *err, size_t errlen, const char *prefix, const char *msg)
{
	size_t n;

	if (!msg)
		msg = "";
	while (*msg == '\n' || *msg == ' ')
		msg++;
	if (strncmp(msg, "ERROR:  ", 8) == 0)
		msg += 8;
	n = strcspn(msg, "\n");
	snprintf(err, errlen, "%s%.*s", prefix, (int)n, msg);
}

/* Server notices ("... does not exist, skipping") are not our log lines. */
static void ignore_notice(void *arg, const char *message)
{
	(void)arg;
	(void)message;
}

PGconn *db_connect(const char *url, const char *actor, char *err, size_t errlen)
{
	const char *keys[] = {"dbname", "application_name", "connect_timeout", NULL};
	const char *vals[] = {url, actor, "10", NULL};
	const char *p[1] = {actor};
	PGconn *c = PQconnectdbParams(keys, vals, 1);

	if (!c) {
		snprintf(err, errlen, "database: out of memory");
		return NULL;
	}
	if (PQstatus(c) != CONNECTION_OK) {
		one_line(err, errlen, "database: ", PQerrorMessage(c));
		PQfinish(c);
		return NULL;
	}
	PQsetNoticeProcessor(c, ignore_notice, NULL);
	if (db_exec(c,
	            "SELECT set_config('billing.actor', $1, false), "
	            "set_config('TimeZone', 'UTC', false)",
	            1, p, err, errlen) < 0) {
		PQfinish(c);
		return NULL;
	}
	return c;
}

int db_set_now(PGconn *c, int64_t now, char *err, size_t errlen)
{
	char t[24];
	const char *p[1] = {t};

	snprintf(t, sizeof(t), "%lld", (long long)now);
	return db_exec(c, "SELECT set_config('billing.now', $1, false)", 1, p, err, errlen);
}

PGresult *db_query(PGconn *c, const char *sql, int nparams, const char *const *params, char *err,
                   size_t errlen)
{
	PGresult *r = PQexecParams(c, sql, nparams, NULL, params, NULL, NULL, 0);
	ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;

	last_sqlstate[0] = '\0';
	if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
		return r;
	if (r && PQresultErrorField(r, PG_DIAG_SQLSTATE))
		snprintf(last_sqlstate, sizeof(last_sqlstate), "%s",
		         PQresultErrorField(r, PG_DIAG_SQLSTATE));
	one_line(err, errlen, "database: ", r ? PQresultErrorMessage(r) : PQerrorMessage(c));
	if (err[0] && strcmp(err, "database: ") == 0)
		one_line(err, errlen, "database: ", PQerrorMessage(c));
	PQclear(r);
	return NULL;
}

int db_exec(PGconn *c, const char *sql, int nparams, const char *const *params, char *err,
            size_t errlen)
{
	PGresult *r = db_query(c, sql, nparams, params, err, errlen);

	if (!r)
		return -1;
	PQclear(r);
	return 0;
}

int db_begin(PGconn *c, char *err, size_t errlen)
{
	return db_exec(c, "BEGIN", 0, NULL, err, errlen);
}

int db_commit(PGconn *c, char *err, size_t errlen)
{
	return db_exec(c, "COMMIT", 0, NULL, err, errlen);
}

void db_rollback(PGconn *c)
{
	PQclear(PQexec(c, "ROLLBACK"));
}

const char *db_last_sqlstate(void)
{
	return last_sqlstate;
}

int db_is_down(PGconn *c)
{
	return !c || PQstatus(c) != CONNECTION_OK;
}

void *db_rows_alloc(PGresult *r, size_t size, int *n, char *err, size_t errlen)
{
	void *rows;

	*n = PQntuples(r);
	rows = calloc(*n ? (size_t)*n : 1, size);
	if (!rows) {
		PQclear(r);
		snprintf(err, errlen, "out of memory");
	}
	return rows;
}

const char *db_str(const PGresult *r, int row, int col)
{
	return PQgetisnull(r, row, col) ? "" : PQgetvalue(r, row, col);
}

int64_t db_i64(const PGresult *r, int row, int col)
{
	return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

int db_isnull(const PGresult *r, int row, int col)
{
	return PQgetisnull(r, row, col);
}

static void arr_put(struct db_arr *a, const char *s, size_t n)
{
	if (a->len + n + 3 > a->cap) {
		size_t cap = a->cap ? a->cap * 2 : 256;
		while (cap < a->len + n + 3)
			cap *= 2;
		char *b = realloc(a->buf, cap);
		if (!b)
			abort(); /* out of memory: nothing sensible to do mid-batch */
		a->buf = b;
		a->cap = cap;
	}
	if (a->len == 0)
		a->buf[a->len++] = '{';
	memcpy(a->buf + a->len, s, n);
	a->len += n;
	a->buf[a->len] = '\0';
}

static void arr_sep(struct db_arr *a)
{
	if (a->len > 1)
		arr_put(a, ",", 1);
	else
		arr_put(a, "", 0);
}

void db_arr_i64(struct db_arr *a, int64_t v)
{
	char num[24];
	int n = snprintf(num, sizeof(num), "%lld", (long long)v);

	arr_sep(a);
	arr_put(a, num, (size_t)n);
}

void db_arr_null(struct db_arr *a)
{
	arr_sep(a);
	arr_put(a, "NULL", 4);
}

void db_arr_str(struct db_arr *a, const char *s)
{
	if (!s) {
		db_arr_null(a);
		return;
	}
	arr_sep(a);
	arr_put(a, "\"", 1);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			arr_put(a, "\\", 1);
		arr_put(a, s, 1);
	}
	arr_put(a, "\"", 1);
}

const char *db_arr_text(struct db_arr *a)
{
	if (a->len == 0)
		arr_put(a, "", 0);
	arr_put(a, "}", 1);
	return a->buf;
}

void db_arr_free(struct db_arr *a)
{
	free(a->buf);
	memset(a, 0, sizeof(*a));
}
