/* events_store.c: the outbox read and requeued (billctl events, the
 * metrics), and its notifications: the SQL of events.h's reading half. */
#include <errno.h>
#include <inttypes.h>
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

static void fill_row(struct events_row *o, const PGresult *r, int i)
{
	o->id = db_i64(r, i, 0);
	snprintf(o->event_id, sizeof(o->event_id), "%s", db_str(r, i, 1));
	snprintf(o->type, sizeof(o->type), "%s", db_str(r, i, 2));
	snprintf(o->customer_id, sizeof(o->customer_id), "%s", db_str(r, i, 3));
	o->seq = db_i64(r, i, 4);
	o->created = db_i64(r, i, 5);
	snprintf(o->status, sizeof(o->status), "%s", db_str(r, i, 6));
	o->attempts = (int)db_i64(r, i, 7);
	o->body = strdup(db_str(r, i, 8));
}

int events_list(PGconn *c, const struct events_filter *f, struct events_row **out, int *n,
                char *err, size_t errlen)
{
	char since[24], after[24], lim[16];
	const char *p[6] = {f->type, f->status, f->customer, f->since ? since : NULL, after, lim};
	PGresult *r;

	snprintf(since, sizeof(since), "%" PRId64, f->since);
	snprintf(after, sizeof(after), "%" PRId64, f->after_id);
	snprintf(lim, sizeof(lim), "%d", f->limit > 0 ? f->limit : 1000000);
	r = db_query(c, SQL_LIST, 6, p, err, errlen);
	if (!r || !(*out = db_rows_alloc(r, sizeof(**out), n, err, errlen)))
		return -1;
	for (int i = 0; i < *n; i++) {
		fill_row(&(*out)[i], r, i);
		if (!(*out)[i].body) {
			PQclear(r);
			events_rows_free(*out, i);
			snprintf(err, errlen, "out of memory");
			return -1;
		}
	}
	PQclear(r);
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

int events_show(PGconn *c, const char *event_id, struct events_row *row,
                struct events_attempt **att, int *natt, char *err, size_t errlen)
{
	const char *p[1] = {event_id};
	char id[24];
	const char *q[1] = {id};
	PGresult *r = db_query(c, SQL_SHOW, 1, p, err, errlen);

	if (!r)
		return -1;
	if (PQntuples(r) == 0) {
		PQclear(r);
		snprintf(err, errlen, "unknown event '%.40s'", event_id);
		return -1;
	}
	fill_row(row, r, 0);
	PQclear(r);
	snprintf(id, sizeof(id), "%" PRId64, row->id);
	if (!row->body || !(r = db_query(c, SQL_ATTEMPTS, 1, q, err, errlen)) ||
	    !(*att = db_rows_alloc(r, sizeof(**att), natt, err, errlen))) {
		if (!row->body)
			snprintf(err, errlen, "out of memory");
		free(row->body);
		return -1;
	}
	for (int i = 0; i < *natt; i++) {
		struct events_attempt *a = &(*att)[i];
		a->at = db_i64(r, i, 0);
		a->http_status = (int)db_i64(r, i, 1);
		a->latency_ms = (int)db_i64(r, i, 2);
		snprintf(a->error, sizeof(a->error), "%s", db_str(r, i, 3));
		snprintf(a->owner, sizeof(a->owner), "%s", db_str(r, i, 4));
	}
	PQclear(r);
	return 0;
}

static const char SQL_REPLAY[] =
    "UPDATE events SET status = 'pending', tries = 0, next_attempt_at = clock_timestamp()"
    " WHERE CASE WHEN $1::text IS NOT NULL THEN event_id = $1"
    "            ELSE created_at >= to_timestamp($2::bigint)"
    "                 AND ($3::text IS NULL OR type = $3) END";

int events_replay(PGconn *c, const char *event_id, const struct events_filter *f, int *n, char *err,
                  size_t errlen)
{
	char since[24];
	const char *p[3] = {event_id, since, f ? f->type : NULL};
	PGresult *r;

	snprintf(since, sizeof(since), "%" PRId64, f ? f->since : 0);
	r = db_query(c, SQL_REPLAY, 3, p, err, errlen);
	if (!r)
		return -1;
	*n = atoi(PQcmdTuples(r));
	PQclear(r);
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
