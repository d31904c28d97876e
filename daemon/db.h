/* db.h: libpq connection and parameterised query helpers. */
#ifndef DB_H
#define DB_H

#include <stddef.h>
#include <stdint.h>
#include <libpq-fe.h>

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

/* Like db_query for statements whose rows are not needed; 0 / -1. */
int db_exec(PGconn *c, const char *sql, int nparams, const char *const *params, char *err,
            size_t errlen);

/* BEGIN / COMMIT / ROLLBACK; 0 / -1. */
int db_begin(PGconn *c, char *err, size_t errlen);
int db_commit(PGconn *c, char *err, size_t errlen);
void db_rollback(PGconn *c);

/* SQLSTATE of the last failed db_query/db_exec on this thread ("" if none). */
const char *db_last_sqlstate(void);

/* 1 when the connection is lost (the caller should reconnect). */
int db_is_down(PGconn *c);

/* An array of one element of size bytes per row of r (zeroed; at least one
 * element, so never NULL on success), its length in *n. NULL with err when
 * out of memory, after PQclear(r). The caller free()s it. */
void *db_rows_alloc(PGresult *r, size_t size, int *n, char *err, size_t errlen);

/* Field helpers: NULL-safe, "" for SQL NULL. */
const char *db_str(const PGresult *r, int row, int col);
int64_t db_i64(const PGresult *r, int row, int col);
int db_isnull(const PGresult *r, int row, int col);

/* A PostgreSQL array literal built element by element, passed as one text
 * parameter ($1::bigint[]) so that a batch costs one statement. */
struct db_arr {
	char *buf;
	size_t len, cap;
};
void db_arr_i64(struct db_arr *a, int64_t v);
void db_arr_str(struct db_arr *a, const char *s); /* NULL: SQL NULL */
void db_arr_null(struct db_arr *a);
const char *db_arr_text(struct db_arr *a); /* "{...}": once, when complete */
void db_arr_free(struct db_arr *a);

#endif
