/* db.h: libpq connection and parameterised query helpers. */
#ifndef DB_H
#define DB_H

#include <stddef.h>
#include <stdint.h>
#include <libpq-fe.h>

#include "buf.h"

/* Connects, names the connection's actor for the audit log (SET billing.actor)
 * and sets the session time zone to UTC. On failure returns NULL with one
 * line in err (never the password). */
PGconn *db_connect(const char *url, const char *actor, char *err, size_t errlen);

/* Declares the billing clock (unix seconds) for what this connection
 * writes from now on: the events that triggers write take their time from
 * it, and refuse to be written without it. Called by every writer at the
 * start of its work (a pass, a request, a command); 0 / -1. */
int db_set_now(PGconn *c, int64_t now, char *err, size_t errlen);

/* Runs a parameterised statement (text params, NULL = SQL NULL). Returns the
 * result (caller PQclear()s) or NULL with one line in err. */
PGresult *db_query(PGconn *c, const char *sql, int nparams, const char *const *params, char *err,
                   size_t errlen);

/* A hot statement: prepared on each connection at its first use there
 * (parsed and planned once, not at every call); a connection opened again,
 * or reset, prepares it again. Declare it static, one object per SQL text:
 *   static const struct db_stmt CLAIM = DB_STMT("SELECT ...");
 * (prepare 0: an ordinary statement, run unprepared.) */
struct db_stmt {
	const char *sql;
	int prepare;
};
#define DB_STMT(sql)                                                                               \
	{                                                                                          \
		(sql), 1                                                                           \
	}
/* db_query for a prepared statement. */
PGresult *db_query_prepared(PGconn *c, const struct db_stmt *st, int nparams,
                            const char *const *params, char *err, size_t errlen);
/* db_exec for a prepared statement; 0 / -1. */
int db_exec_prepared(PGconn *c, const struct db_stmt *st, int nparams, const char *const *params,
                     char *err, size_t errlen);

/* Typed query parameters, so that no caller formats a number by hand:
 *   r = db_get(c, err, errlen, "SELECT ... WHERE id = $1 AND name = $2",
 *              DB_I(id), DB_S(name));
 * DB_I: an integer; DB_N: an integer, SQL NULL when 0; DB_S: text, SQL
 * NULL when NULL. At most DB_MAX_PARAMS. The error buffer comes before the
 * SQL here, so that the parameters can come last. */
#define DB_MAX_PARAMS 16
enum db_type { DB_INT, DB_INT_OR_NULL, DB_TEXT };
struct db_param {
	enum db_type type;
	int64_t i;
	const char *s;
};
#define DB_I(v) ((struct db_param){DB_INT, (int64_t)(v), NULL})
#define DB_N(v) ((struct db_param){DB_INT_OR_NULL, (int64_t)(v), NULL})
#define DB_S(v) ((struct db_param){DB_TEXT, 0, (v)})
#define DB_PARAMS(...)                                                                             \
	(const struct db_param[]){__VA_ARGS__},                                                    \
	    (int)(sizeof((const struct db_param[]){__VA_ARGS__}) / sizeof(struct db_param))
PGresult *db_get_(PGconn *c, char *err, size_t errlen, const char *sql, const struct db_param *p,
                  int n);
/* The result (caller PQclear()s), or NULL with err. */
#define db_get(c, err, errlen, sql, ...) db_get_(c, err, errlen, sql, DB_PARAMS(__VA_ARGS__))
/* db_get for a prepared statement (struct db_stmt). */
PGresult *db_stmt_get_(PGconn *c, char *err, size_t errlen, const struct db_stmt *st,
                       const struct db_param *p, int n);
#define db_stmt_get(c, err, errlen, st, ...)                                                       \
	db_stmt_get_(c, err, errlen, st, DB_PARAMS(__VA_ARGS__))
/* db_stmt_get in two steps, for a caller with other work while the server
 * runs st: db_stmt_send sends it (prepared first, waiting, the first time on
 * c), 0 / -1 with err; db_ready says whether its result has come (1), not
 * yet (0: wait for PQsocket(c) to be readable), or the connection failed
 * (-1); db_stmt_wait returns the result, as db_stmt_get does, waiting for
 * it if need be. Nothing else may be sent on c in between. */
int db_stmt_send_(PGconn *c, char *err, size_t errlen, const struct db_stmt *st,
                  const struct db_param *p, int n);
#define db_stmt_send(c, err, errlen, st, ...)                                                      \
	db_stmt_send_(c, err, errlen, st, DB_PARAMS(__VA_ARGS__))
int db_ready(PGconn *c);
PGresult *db_stmt_wait(PGconn *c, char *err, size_t errlen);
/* 0 / -1 with err. */
#define db_run(c, err, errlen, sql, ...) db_count_(c, err, errlen, sql, DB_PARAMS(__VA_ARGS__), 0)
/* How many rows the statement returned (an UPDATE ... RETURNING: how many
 * it changed), or -1 with err. */
#define db_count(c, err, errlen, sql, ...) db_count_(c, err, errlen, sql, DB_PARAMS(__VA_ARGS__), 1)
int db_count_(PGconn *c, char *err, size_t errlen, const char *sql, const struct db_param *p, int n,
              int rows);

/* r when it has a row; else NULL, with err: fmt's message when r has no
 * row (r is cleared), the query's error when r is NULL. For lookups:
 *   r = db_one(db_get(...), err, errlen, "unknown subscription %d", id); */
PGresult *db_one(PGresult *r, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Like db_query for statements whose rows are not needed; 0 / -1. */
int db_exec(PGconn *c, const char *sql, int nparams, const char *const *params, char *err,
            size_t errlen);

/* BEGIN / COMMIT / ROLLBACK; 0 / -1. */
int db_begin(PGconn *c, char *err, size_t errlen);
int db_commit(PGconn *c, char *err, size_t errlen);
void db_rollback(PGconn *c);
/* BEGIN a transaction that records a batch by key: its COMMIT returns
 * before its WAL is on disk (synchronous_commit off for it alone), so only
 * for what a crash may lose safely, because a later pass finds it out again;
 * and its statements read by index (enable_seqscan off for it alone),
 * because a cached plan made while a table was small would otherwise scan
 * the whole table for each batch as it grows (docs/design.md, "What a
 * charge costs the database"). The billing clock is now for the
 * transaction alone (db_set_now), in the same round trip. 0 / -1. */
int db_begin_batch(PGconn *c, int64_t now, char *err, size_t errlen);
/* on: the session's prepared statements run one generic plan, made without
 * sequential scans, instead of being planned again at each run; off: back
 * to the server's settings. For a statement run hundreds of times in a row with
 * different numbers (the pump's claims). 0 / -1. */
int db_generic_plans(PGconn *c, int on, char *err, size_t errlen);

/* The index of s in names[0..n) (a state's SQL names, indexed by its enum),
 * or -1. */
int db_name_index(const char *const *names, int n, const char *s);

/* SQLSTATE of the last failed db_query/db_exec on this thread ("" if none). */
const char *db_last_sqlstate(void);
/* The last error was a serialization failure or a deadlock: the transaction
 * (or the lone statement) may simply be run again. */
int db_retryable(void);

/* 1 when the connection is lost (the caller should reconnect). */
int db_is_down(PGconn *c);

/* Every row of r as an array of size-byte elements, each zeroed then
 * filled by fill(r, row, element): the array (at least one element, so never
 * NULL on success; the caller free()s it) with its length in *n. NULL with
 * err when r is NULL (err is the query's) or out of memory. Clears r. */
typedef void (*db_fill_fn)(const PGresult *r, int row, void *out);
void *db_rows(PGresult *r, size_t size, int *n, db_fill_fn fill, char *err, size_t errlen);

/* Named result columns: a row struct's fields in the SELECT's order, so
 * that no fill function reads columns by bare number. DB_COL_I: a number
 * into an int or int64_t field (by its size; SQL NULL is 0); DB_COL_S:
 * text into a char array (cut to fit; SQL NULL is ""); DB_COL_B: a
 * boolean into an int (1 for true). */
enum db_col_kind { DB_KIND_NUM, DB_KIND_TEXT, DB_KIND_BOOL };
struct db_col {
	enum db_col_kind kind;
	size_t off, size;
};
#define DB_COL_(kind, type, field)                                                                 \
	{                                                                                          \
		kind, offsetof(type, field), sizeof(((type *)0)->field)                            \
	}
#define DB_COL_I(type, field) DB_COL_(DB_KIND_NUM, type, field)
#define DB_COL_S(type, field) DB_COL_(DB_KIND_TEXT, type, field)
#define DB_COL_B(type, field) DB_COL_(DB_KIND_BOOL, type, field)
#define DB_NCOLS(cols)        ((int)(sizeof(cols) / sizeof((cols)[0])))
/* Copies row of r, column i into the field cols[i] names, for i < n. */
void db_fill(const PGresult *r, int row, const struct db_col *cols, int n, void *out);
/* db_rows with each element filled by cols (db_fill). */
void *db_rows_of(PGresult *r, size_t size, int *n, const struct db_col *cols, int ncols, char *err,
                 size_t errlen);

/* Field helpers: NULL-safe, "" for SQL NULL. */
const char *db_str(const PGresult *r, int row, int col);
int64_t db_i64(const PGresult *r, int row, int col);
int db_isnull(const PGresult *r, int row, int col);

/* A PostgreSQL array literal built element by element, passed as one text
 * parameter ($1::bigint[]) so that a batch costs one statement. */
struct db_arr {
	struct buf b;
};
void db_arr_i64(struct db_arr *a, int64_t v);
void db_arr_str(struct db_arr *a, const char *s); /* NULL: SQL NULL */
void db_arr_null(struct db_arr *a);
const char *db_arr_text(struct db_arr *a); /* "{...}": once, when complete */
void db_arr_free(struct db_arr *a);

/* Rows sent as columns: one array literal per column, each a parameter
 * ($1::bigint[], $2::text[], ...) that the statement unnests, so that a
 * batch of rows costs one statement. */
#define DB_BATCH_COLS 8
struct db_batch {
	struct db_arr col[DB_BATCH_COLS];
	int ncols, n; /* columns, rows */
};
/* Adds a row: its values in the statement's parameter order, typed as
 * for db_get (DB_I, DB_N, DB_S; DB_NULL for SQL NULL); every row the
 * same count. Out of memory stops the process (docs/design.md). */
#define DB_NULL              DB_S(NULL)
#define db_batch_add(b, ...) db_batch_add_(b, DB_PARAMS(__VA_ARGS__))
void db_batch_add_(struct db_batch *b, const struct db_param *p, int n);
/* st with the columns as its parameters; the result (caller PQclear()s)
 * or NULL with err. */
PGresult *db_batch_query(PGconn *c, const struct db_stmt *st, struct db_batch *b, char *err,
                         size_t errlen);
/* db_batch_query for a statement whose rows are not needed; 0 without a
 * statement when the batch has no row. 0 / -1. */
int db_batch_exec(PGconn *c, const struct db_stmt *st, struct db_batch *b, char *err,
                  size_t errlen);
/* Frees the columns; the batch is empty again. */
void db_batch_free(struct db_batch *b);

/* Declares why this connection's changes are made (billing.reason, beside
 * billing.actor): the audit log stores it with each change. 0 / -1. */
int db_set_reason(PGconn *c, const char *reason, char *err, size_t errlen);

/* 1 when two connections to url are served by one backend: a pooler in
 * transaction (or statement) mode, which would lose or mix the session
 * state every connection keeps (actor, billing clock, time zone); 0 when
 * not, -1 with err. */
int db_sessions_shared(const char *url, const char *actor, char *err, size_t errlen);

/* ---- failover ----
 * database.url may name several hosts (libpq's syntax, e.g.
 * postgresql://h1,h2/billing?target_session_attrs=read-write): a
 * reconnect reaches whichever is the primary now. */

/* Back-off between reconnection attempts: 1 s, doubling up to
 * DB_BACKOFF_MAX. */
#define DB_BACKOFF_MAX 30
struct db_backoff {
	int delay, tries;
	int64_t down_since; /* the caller's clock at the first failure */
};
void db_backoff_reset(struct db_backoff *b);
/* The seconds to wait before the next attempt; the first call of a run
 * records now as the moment the database went away. */
int db_backoff_next(struct db_backoff *b, int64_t now);

/* "host:port" of the server c is connected to, for the log. */
void db_where(PGconn *c, char *buf, size_t len);

/* Which server history a primary belongs to: its system identifier (a
 * restore into a new cluster changes it) and its timeline (a promotion
 * changes it). */
struct db_identity {
	char system_id[24];
	int timeline;
	char seen_at[48]; /* failover_check: the server's time when it looked */
};
/* 0 / -1 with err (also on a standby, which has no current WAL position). */
int db_identity(PGconn *c, struct db_identity *id, char *err, size_t errlen);

#endif
