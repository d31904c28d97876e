/* owner_lock.c: the owner lock's connection. It runs no statement while
 * the lock is held: its health is read from what the server sent, so that a
 * claim can ask for it each time for the cost of a recv(). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "db.h"
#include "log.h"
#include "owner_lock.h"

#define RETRY_MS 1000

struct owner_lock {
	char *url;
	char owner[96];
	char name[104]; /* its connection's application_name: "<owner>/lock" */
	PGconn *c;
	int held;
	int ended;          /* the server said it ends the session */
	int quiet;          /* the failure to take it again is logged */
	long long retry_at; /* monotonic ms: no attempt to take it before */
	char why[256];
};

static long long monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* An error on an idle session comes through here: the server ends it
 * (pg_terminate_backend, a shutdown), and may release the lock before the
 * connection's end reaches us. */
static void on_notice(void *arg, const PGresult *r)
{
	struct owner_lock *l = arg;
	const char *sev = PQresultErrorField(r, PG_DIAG_SEVERITY_NONLOCALIZED);
	const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);

	if (sev && (strcmp(sev, "FATAL") == 0 || strcmp(sev, "PANIC") == 0)) {
		l->ended = 1;
		snprintf(l->why, sizeof(l->why), "%s", msg ? msg : sev);
	}
}

static void drop(struct owner_lock *l)
{
	PQfinish(l->c);
	l->c = NULL;
	l->held = 0;
	l->ended = 0;
}

/* Reads what the server sent, without waiting: 1 when the session is over. */
static int lost(struct owner_lock *l)
{
	PGnotify *n;

	if (PQconsumeInput(l->c))
		while ((n = PQnotifies(l->c)) != NULL) /* parses: an error reaches on_notice */
			PQfreemem(n);
	if (l->ended)
		return 1;
	if (PQstatus(l->c) == CONNECTION_OK)
		return 0;
	snprintf(l->why, sizeof(l->why), "%s", PQerrorMessage(l->c));
	l->why[strcspn(l->why, "\n")] = '\0';
	return 1;
}

static void take(struct owner_lock *l)
{
	char err[512];
	PGresult *r;

	l->retry_at = monotonic_ms() + RETRY_MS;
	if (!l->c) {
		l->c = db_connect(l->url, l->name, err, sizeof(err));
		if (l->c)
			PQsetNoticeReceiver(l->c, on_notice, l);
	}
	r = l->c ? db_get(l->c, err, sizeof(err),
	                  "SELECT pg_try_advisory_lock(" OWNER_LOCK_CLASS ", hashtext($1))",
	                  DB_S(l->owner))
	         : NULL;
	if (r) {
		l->held = strcmp(db_str(r, 0, 0), "t") == 0;
		PQclear(r);
		if (!l->held)
			snprintf(err, sizeof(err),
			         "another session holds it (a process of the same name?)");
	} else
		drop(l);
	if (l->held) {
		log_event("info", "owner_lock", "owner", l->owner, (char *)NULL);
		l->quiet = 0;
	} else if (!l->quiet) {
		log_event("error", "owner_lock_unavailable", "owner", l->owner, "error", err,
		          "detail", "nothing is claimed until it is taken", (char *)NULL);
		l->quiet = 1;
	}
}

struct owner_lock *owner_lock_new(const char *url, const char *owner)
{
	struct owner_lock *l = calloc(1, sizeof(*l));

	if (!l || !(l->url = strdup(url))) {
		free(l);
		return NULL;
	}
	snprintf(l->owner, sizeof(l->owner), "%s", owner);
	snprintf(l->name, sizeof(l->name), "%s/lock", owner);
	take(l);
	return l;
}

void owner_lock_free(struct owner_lock *l)
{
	if (!l)
		return;
	PQfinish(l->c);
	free(l->url);
	free(l);
}

void owner_lock_renew(struct owner_lock *l)
{
	drop(l);
	take(l);
}

int owner_lock_held(struct owner_lock *l)
{
	if (l->held && !lost(l))
		return 1;
	if (l->held) {
		log_event("error", "owner_lock_lost", "owner", l->owner, "error", l->why, "detail",
		          "nothing is claimed until it is taken again", (char *)NULL);
		drop(l);
		l->quiet = 1;
		l->retry_at = monotonic_ms() + RETRY_MS;
		return 0;
	}
	if (monotonic_ms() >= l->retry_at)
		take(l);
	return l->held;
}
