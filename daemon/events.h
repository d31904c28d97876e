/* events.h: the outbox of events for the operator's application.
 *
 * State-change events are written by database triggers in the writer's own
 * transaction (migrations/0004_events.sql); this module writes the
 * time-based ones (card expiring, trial ending) and reconcile's findings,
 * delivers them (signed POSTs through libcurl's multi interface, on a thread
 * and database connection of their own) and reads them for billctl. */
#ifndef EVENTS_H
#define EVENTS_H

#include <stddef.h>
#include <stdint.h>
#include <libpq-fe.h>

#include "config.h"

/* Writes one event of type for customer (may be NULL) with data (a JSON
 * object) in the caller's transaction, at the connection's billing clock
 * (db_set_now). once_key (may be NULL) makes it happen at most once. */
int events_emit(PGconn *c, const char *type, const char *customer, const char *data_json,
                const char *once_key, char *err, size_t errlen);

/* Writes the time-based events due at now: customer.card_expiring
 * (card_days before a bound card's last day) and subscription.trial_ending
 * (3 days before a trial's end), each once. *written: how many. */
int events_due(PGconn *c, int card_days, int64_t now, int *written, char *err, size_t errlen);

/* Events pending (to be delivered, retries included) and failed. */
int events_count(PGconn *c, long *pending, long *failed, char *err, size_t errlen);

/* ---- delivery ---- */

struct events;

/* Starts the delivery thread: its own database connection (reconnected as
 * needed), the time-based events every few seconds, and, when
 * c->events.url is set, deliveries claimed with SKIP LOCKED under a lease
 * in owner's name. clock is the billing clock. NULL with err on failure. */
struct events *events_start(const struct cfg *c, int64_t (*clock)(void), const char *owner,
                            char *err, size_t errlen);
/* New settings and secret (SIGHUP): taken by the thread before its next
 * claim; requests in flight finish with the old ones. */
void events_reload(struct events *e, const struct cfg_events *ec);
/* Stops the thread; what is in flight is given back (sent again later). */
void events_stop(struct events *e);

/* ---- reading (billctl) ---- */

struct events_filter {
	const char *type;     /* NULL: any */
	const char *status;   /* pending, delivered, failed; NULL: any */
	const char *customer; /* NULL: any */
	int64_t since;        /* created at or after (unix seconds); 0: any */
	int64_t after_id;     /* rows after this one (tail) */
	int limit;
};

struct events_row {
	int64_t id;
	char event_id[40];
	char type[40];
	char customer_id[31];
	int64_t seq;
	int64_t created;
	char status[12];
	int attempts;
	char *body; /* malloc'd */
};

struct events_attempt {
	int64_t at;      /* unix seconds */
	int http_status; /* 0: no answer */
	int latency_ms;
	char error[256];
	char owner[96];
};

/* Rows matching f, oldest first; free with events_rows_free. */
int events_list(PGconn *c, const struct events_filter *f, struct events_row **out, int *n,
                char *err, size_t errlen);
void events_rows_free(struct events_row *rows, int n);
/* One event by its evt_ id with every delivery attempt (*att malloc'd). */
int events_show(PGconn *c, const char *event_id, struct events_row *row,
                struct events_attempt **att, int *natt, char *err, size_t errlen);
/* Queues event_id (or, when it is NULL, every event matching f's since and
 * type) to be sent again now with a fresh retry schedule; *n: how many. */
int events_replay(PGconn *c, const char *event_id, const struct events_filter *f, int *n, char *err,
                  size_t errlen);
/* LISTENs for new events on c; events_wait then returns 1 when one was
 * committed (0 on timeout, -1 when the connection is lost). */
int events_listen(PGconn *c, char *err, size_t errlen);
int events_wait(PGconn *c, int timeout_ms);

#endif
