/* db.c: libpq connection and parameterised query helpers.
 *
 * Every error becomes one line: libpq's messages span several lines, and a
 * caller prints ours as "billctl: <line>". */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-events.h>

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

/* Everything a new connection needs before its first statement: the place
 * where per-connection state is (re)set after a reconnect, so that nothing
 * set on the lost connection is assumed on its successor. No JIT: our
 * statements are short, and one whose estimated cost passed jit_above_cost
 * (the due claim's generic plan, over a million subscriptions) was compiled
 * at every run, 30-40 ms for a statement that runs in 2. */
static int session_init(PGconn *c, const char *actor, char *err, size_t errlen)
{
	const char *p[1] = {actor};

	PQsetNoticeProcessor(c, ignore_notice, NULL);
	return db_exec(c,
	               "SELECT set_config('billing.actor', $1, false), "
	               "set_config('TimeZone', 'UTC', false), set_config('jit', 'off', false)",
	               1, p, err, errlen);
}

PGconn *db_connect(const char *url, const char *actor, char *err, size_t errlen)
{
	const char *keys[] = {"dbname", "application_name", "connect_timeout", NULL};
	const char *vals[] = {url, actor, "10", NULL};
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
	if (session_init(c, actor, err, errlen) < 0) {
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

/* r when it succeeded; else NULL with err (and the SQLSTATE kept). */
static PGresult *result(PGconn *c, PGresult *r, char *err, size_t errlen)
{
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

PGresult *db_query(PGconn *c, const char *sql, int nparams, const char *const *params, char *err,
                   size_t errlen)
{
	return result(c, PQexecParams(c, sql, nparams, NULL, params, NULL, NULL, 0), err, errlen);
}

/* The statements prepared on one connection, kept with it by libpq (an
 * event procedure's instance data): a new connection, or one reset, starts
 * with none, so that what the server forgot is prepared again. */
struct prepared {
	int n, cap;
	const struct db_stmt **stmts; /* the server's name for stmts[i]: "billing_<i>" */
};

static int prepared_event(PGEventId id, void *info, void *arg)
{
	struct prepared *pr = NULL;

	(void)arg;
	if (id == PGEVT_CONNRESET)
		pr = PQinstanceData(((PGEventConnReset *)info)->conn, prepared_event);
	else if (id == PGEVT_CONNDESTROY)
		pr = PQinstanceData(((PGEventConnDestroy *)info)->conn, prepared_event);
	if (pr) {
		pr->n = 0;
		if (id == PGEVT_CONNDESTROY) {
			free(pr->stmts);
			free(pr);
		}
	}
	return 1;
}

/* The connection's registry, made on first use; NULL when out of memory. */
static struct prepared *prepared_of(PGconn *c)
{
	struct prepared *pr = PQinstanceData(c, prepared_event);

	if (pr)
		return pr;
	pr = calloc(1, sizeof(*pr));
	if (!pr)
		return NULL;
	if (!PQregisterEventProc(c, prepared_event, "billing prepared", NULL) ||
	    !PQsetInstanceData(c, prepared_event, pr)) {
		free(pr);
		return NULL;
	}
	return pr;
}

/* st's name on c, prepared there first if it is not yet; -1 with err. */
static int prepared_name(PGconn *c, const struct db_stmt *st, char *name, size_t len, char *err,
                         size_t errlen)
{
	struct prepared *pr = prepared_of(c);
	PGresult *r;
	int i;

	if (!pr) {
		snprintf(err, errlen, "database: out of memory");
		return -1;
	}
	for (i = 0; i < pr->n && pr->stmts[i] != st; i++)
		;
	snprintf(name, len, "billing_%d", i);
	if (i < pr->n)
		return 0;
	if (pr->n == pr->cap) {
		int cap = pr->cap ? pr->cap * 2 : 8;
		const struct db_stmt **grown = realloc(pr->stmts, (size_t)cap * sizeof(*grown));

		if (!grown) {
			snprintf(err, errlen, "database: out of memory");
			return -1;
		}
		pr->stmts = grown;
		pr->cap = cap;
	}
	r = PQprepare(c, name, st->sql, 0, NULL);
	if (!r || PQresultStatus(r) != PGRES_COMMAND_OK) {
		one_line(err, errlen,
		         "database: ", r ? PQresultErrorMessage(r) : PQerrorMessage(c));
		PQclear(r);
		return -1;
	}
	PQclear(r);
	pr->stmts[pr->n++] = st;
	return 0;
}

PGresult *db_query_prepared(PGconn *c, const struct db_stmt *st, int nparams,
                            const char *const *params, char *err, size_t errlen)
{
	char name[24];

	if (prepared_name(c, st, name, sizeof(name), err, errlen) < 0)
		return NULL;
	return result(c, PQexecPrepared(c, name, nparams, params, NULL, NULL, 0), err, errlen);
}

int db_exec_prepared(PGconn *c, const struct db_stmt *st, int nparams, const char *const *params,
                     char *err, size_t errlen)
{
	PGresult *r = db_query_prepared(c, st, nparams, params, err, errlen);

	if (!r)
		return -1;
	PQclear(r);
	return 0;
}

PGresult *db_one(PGresult *r, char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!r || PQntuples(r) > 0)
		return r;
	PQclear(r);
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
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

/* More parameters than DB_MAX_PARAMS is a programming error, caught by
 * every test that runs the query. */
PGresult *db_get_(PGconn *c, char *err, size_t errlen, const char *sql, const struct db_param *p,
                  int n)
{
	return db_stmt_get_(c, err, errlen, &(const struct db_stmt){sql, 0}, p, n);
}

/* p[0..n) as text in v, numbers spelled in num. */
static void params_text(const struct db_param *p, int n, char num[][24], const char **v)
{
	if (n > DB_MAX_PARAMS)
		abort();
	for (int i = 0; i < n; i++) {
		v[i] = p[i].s;
		if (p[i].type == DB_TEXT || (p[i].type == DB_INT_OR_NULL && p[i].i == 0))
			continue;
		snprintf(num[i], 24, "%lld", (long long)p[i].i);
		v[i] = num[i];
	}
}

PGresult *db_stmt_get_(PGconn *c, char *err, size_t errlen, const struct db_stmt *st,
                       const struct db_param *p, int n)
{
	char num[DB_MAX_PARAMS][24];
	const char *v[DB_MAX_PARAMS];

	params_text(p, n, num, v);
	return st->prepare ? db_query_prepared(c, st, n, v, err, errlen)
	                   : db_query(c, st->sql, n, v, err, errlen);
}

int db_stmt_send_(PGconn *c, char *err, size_t errlen, const struct db_stmt *st,
                  const struct db_param *p, int n)
{
	char num[DB_MAX_PARAMS][24], name[24];
	const char *v[DB_MAX_PARAMS];

	params_text(p, n, num, v);
	if (prepared_name(c, st, name, sizeof(name), err, errlen) < 0)
		return -1;
	if (!PQsendQueryPrepared(c, name, n, v, NULL, NULL, 0)) {
		one_line(err, errlen, "database: ", PQerrorMessage(c));
		return -1;
	}
	return 0;
}

int db_ready(PGconn *c)
{
	if (!PQconsumeInput(c))
		return -1;
	return !PQisBusy(c);
}

PGresult *db_stmt_wait(PGconn *c, char *err, size_t errlen)
{
	PGresult *r = PQgetResult(c), *more;

	while ((more = PQgetResult(c)))
		PQclear(more);
	return result(c, r, err, errlen);
}

int db_count_(PGconn *c, char *err, size_t errlen, const char *sql, const struct db_param *p, int n,
              int rows)
{
	PGresult *r = db_get_(c, err, errlen, sql, p, n);
	int k;

	if (!r)
		return -1;
	k = rows ? PQntuples(r) : 0;
	PQclear(r);
	return k;
}

int db_begin(PGconn *c, char *err, size_t errlen)
{
	return db_exec(c, "BEGIN", 0, NULL, err, errlen);
}

int db_begin_batch(PGconn *c, int64_t now, char *err, size_t errlen)
{
	if (db_begin(c, err, errlen) < 0)
		return -1;
	return db_run(
	    c, err, errlen,
	    "SELECT set_config('synchronous_commit', 'off', true), "
	    "set_config('enable_seqscan', 'off', true), set_config('billing.now', $1, true)",
	    DB_I(now));
}

int db_generic_plans(PGconn *c, int on, char *err, size_t errlen)
{
	if (on)
		return db_exec(c,
		               "SELECT set_config('plan_cache_mode', 'force_generic_plan', false), "
		               "set_config('enable_seqscan', 'off', false)",
		               0, NULL, err, errlen);
	return db_exec(c,
	               "SELECT set_config(name, reset_val, false) FROM pg_settings"
	               " WHERE name IN ('plan_cache_mode', 'enable_seqscan')",
	               0, NULL, err, errlen);
}

int db_commit(PGconn *c, char *err, size_t errlen)
{
	return db_exec(c, "COMMIT", 0, NULL, err, errlen);
}

void db_rollback(PGconn *c)
{
	PQclear(PQexec(c, "ROLLBACK"));
}

int db_name_index(const char *const *names, int n, const char *s)
{
	for (int i = 0; s && i < n; i++)
		if (strcmp(s, names[i]) == 0)
			return i;
	return -1;
}

const char *db_last_sqlstate(void)
{
	return last_sqlstate;
}

int db_retryable(void)
{
	return strcmp(last_sqlstate, "40001") == 0 || strcmp(last_sqlstate, "40P01") == 0;
}

int db_is_down(PGconn *c)
{
	return !c || PQstatus(c) != CONNECTION_OK;
}

/* db_rows and db_rows_of: by fill, else by cols */
static void *rows_of(PGresult *r, size_t size, int *n, db_fill_fn fill, const struct db_col *cols,
                     int ncols, char *err, size_t errlen)
{
	char *rows;

	if (!r)
		return NULL;
	*n = PQntuples(r);
	rows = calloc(*n ? (size_t)*n : 1, size);
	if (!rows)
		snprintf(err, errlen, "out of memory");
	for (int i = 0; rows && i < *n; i++)
		if (fill)
			fill(r, i, rows + (size_t)i * size);
		else
			db_fill(r, i, cols, ncols, rows + (size_t)i * size);
	PQclear(r);
	return rows;
}

void *db_rows(PGresult *r, size_t size, int *n, db_fill_fn fill, char *err, size_t errlen)
{
	return rows_of(r, size, n, fill, NULL, 0, err, errlen);
}

void *db_rows_of(PGresult *r, size_t size, int *n, const struct db_col *cols, int ncols, char *err,
                 size_t errlen)
{
	return rows_of(r, size, n, NULL, cols, ncols, err, errlen);
}

void db_fill(const PGresult *r, int row, const struct db_col *cols, int n, void *out)
{
	for (int i = 0; i < n; i++) {
		char *f = (char *)out + cols[i].off;
		int64_t v;

		switch (cols[i].kind) {
		case DB_KIND_NUM:
			v = db_i64(r, row, i);
			if (cols[i].size == sizeof(int64_t))
				memcpy(f, &v, sizeof(v));
			else
				*(int *)(void *)f = (int)v;
			break;
		case DB_KIND_TEXT:
			snprintf(f, cols[i].size, "%s", db_str(r, row, i));
			break;
		case DB_KIND_BOOL:
			*(int *)(void *)f = strcmp(db_str(r, row, i), "t") == 0;
			break;
		}
	}
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

/* Out of memory while a batch is built: the outcomes it carries must not be
 * lost silently, so the process stops (docs/design.md, "Out of memory"). */
static void arr_put(struct db_arr *a, const char *s, size_t n)
{
	if (a->b.len == 0 && buf_add(&a->b, "{", 1) < 0)
		abort();
	if (buf_add(&a->b, s, n) < 0)
		abort();
}

static void arr_sep(struct db_arr *a)
{
	if (a->b.len > 1)
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
	if (a->b.len == 0)
		arr_put(a, "", 0);
	arr_put(a, "}", 1);
	return a->b.p;
}

void db_arr_free(struct db_arr *a)
{
	buf_free(&a->b);
}

void db_batch_add_(struct db_batch *b, const struct db_param *p, int n)
{
	/* a row of another width is a programming error, caught by any test */
	if (n > DB_BATCH_COLS || (b->n && n != b->ncols))
		abort();
	for (int i = 0; i < n; i++)
		switch (p[i].type) {
		case DB_INT_OR_NULL:
			if (!p[i].i) {
				db_arr_null(&b->col[i]);
				break;
			}
			/* fall through */
		case DB_INT:
			db_arr_i64(&b->col[i], p[i].i);
			break;
		case DB_TEXT:
			db_arr_str(&b->col[i], p[i].s);
			break;
		}
	b->ncols = n;
	b->n++;
}

PGresult *db_batch_query(PGconn *c, const struct db_stmt *st, struct db_batch *b, char *err,
                         size_t errlen)
{
	const char *p[DB_BATCH_COLS];

	for (int i = 0; i < b->ncols; i++)
		p[i] = db_arr_text(&b->col[i]);
	return st->prepare ? db_query_prepared(c, st, b->ncols, p, err, errlen)
	                   : db_query(c, st->sql, b->ncols, p, err, errlen);
}

int db_batch_exec(PGconn *c, const struct db_stmt *st, struct db_batch *b, char *err, size_t errlen)
{
	PGresult *r;

	if (!b->n)
		return 0;
	r = db_batch_query(c, st, b, err, errlen);
	if (!r)
		return -1;
	PQclear(r);
	return 0;
}

void db_batch_free(struct db_batch *b)
{
	for (int i = 0; i < DB_BATCH_COLS; i++)
		db_arr_free(&b->col[i]);
	b->ncols = b->n = 0;
}

int db_set_reason(PGconn *c, const char *reason, char *err, size_t errlen)
{
	return db_run(c, err, errlen, "SELECT set_config('billing.reason', $1, false)",
	              DB_S(reason));
}

/* ---- failover: reconnecting, and which server answered ---- */

void db_backoff_reset(struct db_backoff *b)
{
	b->delay = 0;
	b->tries = 0;
	b->down_since = 0;
}

int db_backoff_next(struct db_backoff *b, int64_t now)
{
	if (b->tries++ == 0)
		b->down_since = now;
	b->delay = b->delay == 0                   ? 1
	           : b->delay * 2 > DB_BACKOFF_MAX ? DB_BACKOFF_MAX
	                                           : b->delay * 2;
	return b->delay;
}

void db_where(PGconn *c, char *buf, size_t len)
{
	snprintf(buf, len, "%s:%s", c && PQhost(c) ? PQhost(c) : "?",
	         c && PQport(c) ? PQport(c) : "?");
}

/* The timeline is the first 8 hex digits of the current WAL file's name;
 * a promotion starts a new one at once (pg_control_checkpoint() only shows
 * it after the next checkpoint). */
static const char SQL_IDENTITY[] =
    "SELECT system_identifier::text,"
    "       ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int"
    "  FROM pg_control_system()";

int db_identity(PGconn *c, struct db_identity *id, char *err, size_t errlen)
{
	PGresult *r = db_one(db_query(c, SQL_IDENTITY, 0, NULL, err, errlen), err, errlen,
	                     "database: no control data");

	if (!r)
		return -1;
	snprintf(id->system_id, sizeof(id->system_id), "%s", db_str(r, 0, 0));
	id->timeline = (int)db_i64(r, 0, 1);
	PQclear(r);
	return 0;
}

/* A pooler in transaction mode hands one server connection to whichever
 * client runs the next transaction: two connections of ours then answer
 * from the same backend (PgBouncer reuses the server released last), and
 * what one set for its session the other sees. */
int db_sessions_shared(const char *url, const char *actor, char *err, size_t errlen)
{
	PGconn *a = db_connect(url, actor, err, errlen);
	PGconn *b = a ? db_connect(url, actor, err, errlen) : NULL;
	PGresult *ra = NULL, *rb = NULL;
	int rc = -1;
	static const char SQL_PID[] = "SELECT pg_backend_pid()";

	if (b && (ra = db_query(a, SQL_PID, 0, NULL, err, errlen)) &&
	    (rb = db_query(b, SQL_PID, 0, NULL, err, errlen)))
		rc = strcmp(db_str(ra, 0, 0), db_str(rb, 0, 0)) == 0;
	PQclear(ra);
	PQclear(rb);
	PQfinish(a);
	PQfinish(b);
	return rc;
}
