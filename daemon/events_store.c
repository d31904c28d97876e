/* events_store.c: the outbox read and requeued (billctl events, the
 * metrics), and its notifications: the SQL of events.h's reading half. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "events.h"

#define EVENTS_CHANNEL "billing_events"

int events_count(PGconn *c, long *pending, long *failed, char *err, size_t errlen)
{
	/* both read a partial index */
	PGresult *r = db_query(c,
	                       "SELECT (SELECT count(*) FROM events WHERE status = 'pending'),"
	                       "       (SELECT count(*) FROM events WHERE status = 'failed')",
	                       0, NULL, err, errlen);

	if (!r)
		return -1;
	*pending = (long)db_i64(r, 0, 0);
	*failed = (long)db_i64(r, 0, 1);
	PQclear(r);
	return 0;
}

static const char SQL_LIST[] =
    "SELECT e.id, e.event_id, e.type, e.customer_id, e.seq,"
    "       extract(epoch FROM e.created_at)::bigint, e.status,"
    "       (SELECT count(*) FROM event_attempts a WHERE a.event_id = e.id), e.body"
    "  FROM events e"
    " WHERE ($1::text IS NULL OR e.type = $1) AND ($2::text IS NULL OR e.status = $2)"
    "   AND ($3::text IS NULL OR e.customer_id = $3)"
    "   AND ($4::bigint IS NULL OR e.created_at >= to_timestamp($4::bigint))"
    "   AND e.id > $5::bigint"
    " ORDER BY e.id LIMIT $6";

/* SQL_LIST's and SQL_SHOW's columns but the last (the body), in order. */
static const struct db_col ROW_COLS[] = {
    DB_COL_I(struct events_row, id),     DB_COL_S(struct events_row, event_id),
    DB_COL_S(struct events_row, type),   DB_COL_S(struct events_row, customer_id),
    DB_COL_I(struct events_row, seq),    DB_COL_I(struct events_row, created),
    DB_COL_S(struct events_row, status), DB_COL_I(struct events_row, attempts),
};

/* Sets body NULL when out of memory: the caller checks. */
static void fill_row(const PGresult *r, int i, void *row)
{
	struct events_row *o = row;

	db_fill(r, i, ROW_COLS, DB_NCOLS(ROW_COLS), o);
	o->body = strdup(db_str(r, i, DB_NCOLS(ROW_COLS)));
}

int events_list(PGconn *c, const struct events_filter *f, struct events_row **out, int *n,
                char *err, size_t errlen)
{
	*out = db_rows(db_get(c, err, errlen, SQL_LIST, DB_S(f->type), DB_S(f->status),
	                      DB_S(f->customer), DB_N(f->since), DB_I(f->after_id),
	                      DB_I(f->limit > 0 ? f->limit : 1000000)),
	               sizeof(**out), n, fill_row, err, errlen);
	if (!*out)
		return -1;
	for (int i = 0; i < *n; i++)
		if (!(*out)[i].body) {
			events_rows_free(*out, *n);
			snprintf(err, errlen, "out of memory");
			return -1;
		}
	return 0;
}

void events_rows_free(struct events_row *rows, int n)
{
	for (int i = 0; rows && i < n; i++)
		free(rows[i].body);
	free(rows);
}

static const char SQL_SHOW[] =
    "SELECT e.id, e.event_id, e.type, e.customer_id, e.seq,"
    "       extract(epoch FROM e.created_at)::bigint, e.status,"
    "       (SELECT count(*) FROM event_attempts a WHERE a.event_id = e.id), e.body"
    "  FROM events e WHERE e.event_id = $1";

static const char SQL_ATTEMPTS[] =
    "SELECT extract(epoch FROM at)::bigint, coalesce(http_status, 0), latency_ms,"
    "       coalesce(error, ''), owner"
    "  FROM event_attempts WHERE event_id = $1 ORDER BY id";

/* SQL_ATTEMPTS's columns, in order. */
static const struct db_col ATTEMPT_COLS[] = {
    DB_COL_I(struct events_attempt, at),         DB_COL_I(struct events_attempt, http_status),
    DB_COL_I(struct events_attempt, latency_ms), DB_COL_S(struct events_attempt, error),
    DB_COL_S(struct events_attempt, owner),
};

int events_show(PGconn *c, const char *event_id, struct events_row *row,
                struct events_attempt **att, int *natt, char *err, size_t errlen)
{
	PGresult *r = db_one(db_get(c, err, errlen, SQL_SHOW, DB_S(event_id)), err, errlen,
	                     "unknown event '%.40s'", event_id);

	if (!r)
		return -1;
	fill_row(r, 0, row);
	PQclear(r);
	if (!row->body) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	*att = db_rows_of(db_get(c, err, errlen, SQL_ATTEMPTS, DB_I(row->id)), sizeof(**att), natt,
	                  ATTEMPT_COLS, DB_NCOLS(ATTEMPT_COLS), err, errlen);
	if (!*att) {
		free(row->body);
		return -1;
	}
	return 0;
}

static const char SQL_REPLAY[] =
    "UPDATE events SET status = 'pending', tries = 0, next_attempt_at = clock_timestamp()"
    " WHERE CASE WHEN $1::text IS NOT NULL THEN event_id = $1"
    "            ELSE created_at >= to_timestamp($2::bigint)"
    "                 AND ($3::text IS NULL OR type = $3) END RETURNING 1";

int events_replay(PGconn *c, const char *event_id, const struct events_filter *f, int *n, char *err,
                  size_t errlen)
{
	*n = db_count(c, err, errlen, SQL_REPLAY, DB_S(event_id), DB_I(f ? f->since : 0),
	              DB_S(f ? f->type : NULL));
	if (*n < 0)
		return -1;
	if (event_id && *n == 0) {
		snprintf(err, errlen, "unknown event '%.40s'", event_id);
		return -1;
	}
	return 0;
}

int events_listen(PGconn *c, char *err, size_t errlen)
{
	return db_exec(c, "LISTEN " EVENTS_CHANNEL, 0, NULL, err, errlen);
}

int events_wait(PGconn *c, int timeout_ms)
{
	struct pollfd pfd = {.fd = PQsocket(c), .events = POLLIN};
	PGnotify *nt;
	int got = 0;

	if (pfd.fd < 0)
		return -1;
	for (int round = 0; round < 2 && !got; round++) {
		if (round == 1 &&
		    (timeout_ms <= 0 || (poll(&pfd, 1, timeout_ms) < 0 && errno != EINTR)))
			break;
		if (!PQconsumeInput(c))
			return -1;
		while ((nt = PQnotifies(c))) {
			got = 1;
			PQfreemem(nt);
		}
	}
	return got;
}
