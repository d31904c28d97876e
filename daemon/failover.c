/* failover.c: what a promotion or a restore may have lost, found again
 * (docs/design.md, "Failover"). The ring of recently sent charges lives on
 * the pump's thread only; the recorded server history is one row of
 * cluster_identity (migrations/0010_failover.sql). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "charges.h"
#include "failover.h"
#include "log.h"

static const char SQL_RECORD_FIRST[] =
    "INSERT INTO cluster_identity (system_identifier, timeline) VALUES ($1, $2)"
    " ON CONFLICT DO NOTHING";
static const char SQL_RECORDED[] =
    "SELECT system_identifier, timeline, now()::text FROM cluster_identity";
/* Not while a subscription charge opened before the change is still open:
 * resolved absent, its next attempt's number could have been sent on the
 * lost history too. */
static const char SQL_SETTLE[] =
    "UPDATE cluster_identity SET system_identifier = $1, timeline = $2, recorded_at = now()"
    " WHERE NOT EXISTS (SELECT 1 FROM charges WHERE state IN ('pending', 'unknown')"
    "                    AND subscription_id IS NOT NULL AND created_at < $3::timestamptz)"
    " RETURNING 1";

int failover_check(PGconn *c, struct db_identity *id, char *err, size_t errlen)
{
	PGresult *r;
	int differs;
	char tl[16];

	if (db_identity(c, id, err, errlen) < 0 ||
	    db_run(c, err, errlen, SQL_RECORD_FIRST, DB_S(id->system_id), DB_I(id->timeline)) < 0)
		return -1;
	r = db_one(db_get(c, err, errlen, SQL_RECORDED), err, errlen, "no cluster_identity row");
	if (!r)
		return -1;
	differs = strcmp(db_str(r, 0, 0), id->system_id) != 0 || db_i64(r, 0, 1) != id->timeline;
	snprintf(id->seen_at, sizeof(id->seen_at), "%s", db_str(r, 0, 2));
	if (differs) {
		snprintf(tl, sizeof(tl), "%d", id->timeline);
		log_event("warn", "database_history_changed", "recorded_system", db_str(r, 0, 0),
		          "recorded_timeline", db_str(r, 0, 1), "system", id->system_id, "timeline",
		          tl, "detail",
		          "a promotion or a restore may have lost intents: every charge is asked "
		          "with cc_query before it is sent",
		          (char *)NULL);
	}
	PQclear(r);
	return differs;
}

int failover_settle(PGconn *c, const struct db_identity *id, char *err, size_t errlen)
{
	char tl[16];
	int n = db_count(c, err, errlen, SQL_SETTLE, DB_S(id->system_id), DB_I(id->timeline),
	                 DB_S(id->seen_at));

	if (n <= 0)
		return n;
	snprintf(tl, sizeof(tl), "%d", id->timeline);
	log_event("info", "database_history_recorded", "system", id->system_id, "timeline", tl,
	          (char *)NULL);
	return 1;
}

/* Standbys seen by the primary, and whether a commit waits for one. The
 * sync_state column is NULL for roles without pg_read_all_stats. */
static const char SQL_REPLICATION[] =
    "SELECT (SELECT count(*) FROM pg_stat_replication),"
    "       (SELECT count(*) FROM pg_stat_replication WHERE sync_state IS NOT NULL),"
    "       (SELECT count(*) FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')),"
    "       current_setting('synchronous_standby_names') <> ''"
    "       AND current_setting('synchronous_commit') NOT IN ('off', 'local')";

int failover_replication_warning(PGconn *c, char *warn, size_t len, char *err, size_t errlen)
{
	PGresult *r = db_get(c, err, errlen, SQL_REPLICATION);
	int64_t standbys, visible, sync;
	int configured;

	if (!r)
		return -1;
	standbys = db_i64(r, 0, 0);
	visible = db_i64(r, 0, 1);
	sync = db_i64(r, 0, 2);
	configured = strcmp(db_str(r, 0, 3), "t") == 0;
	PQclear(r);
	if (standbys == 0 || (configured && (visible == 0 || sync > 0)))
		return 0;
	snprintf(warn, len,
	         "database: %lld standby(s) but none synchronous: a promotion can lose committed "
	         "charge intents (set synchronous_standby_names and synchronous_commit = on)",
	         (long long)standbys);
	return 1;
}

struct sent {
	char mch_order_no[31];
	char customer_id[31];
	int64_t sub, amount, at;
	time_t mono;
};

struct failover_recent {
	int seconds;
	struct sent *v;
	size_t head, n, cap; /* live entries: v[head .. n) */
};

struct failover_recent *failover_recent_new(int seconds)
{
	struct failover_recent *r = calloc(1, sizeof(*r));

	if (r)
		r->seconds = seconds;
	return r;
}

void failover_recent_free(struct failover_recent *r)
{
	if (!r)
		return;
	free(r->v);
	free(r);
}

static time_t mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

void failover_recent_add(struct failover_recent *r, const char *mch_order_no, int64_t sub,
                         const char *customer_id, int64_t amount, int64_t now)
{
	time_t t = mono_s();
	struct sent *e;

	/* Older than a lease: its intent was committed long enough ago to have
	 * reached any standby that is kept up. */
	while (r->head < r->n && r->v[r->head].mono < t - r->seconds)
		r->head++;
	if (r->head > 0 && r->head == r->n)
		r->head = r->n = 0;
	if (r->n == r->cap && r->head > r->cap / 2) {
		memmove(r->v, r->v + r->head, (r->n - r->head) * sizeof(*r->v));
		r->n -= r->head;
		r->head = 0;
	}
	if (r->n == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 1024;
		struct sent *v = realloc(r->v, cap * sizeof(*v));

		if (!v)
			abort();
		r->v = v;
		r->cap = cap;
	}
	e = &r->v[r->n++];
	snprintf(e->mch_order_no, sizeof(e->mch_order_no), "%s", mch_order_no);
	snprintf(e->customer_id, sizeof(e->customer_id), "%s", customer_id);
	e->sub = sub;
	e->amount = amount;
	e->at = now;
	e->mono = t;
}

int failover_recent_restore(PGconn *c, struct failover_recent *r, char *err, size_t errlen)
{
	struct charges_sent s = {0};
	int n;
	char count[16], sent[16];

	if (r->head == r->n)
		return 0;
	for (size_t i = r->head; i < r->n; i++)
		charges_sent_add(&s, r->v[i].mch_order_no, r->v[i].sub, r->v[i].customer_id,
		                 r->v[i].amount, r->v[i].at);
	n = charges_restore_sent(c, &s, err, errlen);
	charges_sent_free(&s);
	if (n > 0) {
		snprintf(count, sizeof(count), "%d", n);
		snprintf(sent, sizeof(sent), "%zu", r->n - r->head);
		log_event("warn", "intents_restored", "restored", count, "remembered", sent,
		          "detail",
		          "sent before the failover, unknown to this server: cc_query decides",
		          (char *)NULL);
	}
	return n;
}
