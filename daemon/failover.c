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

/* The charges sent in the last `seconds`, oldest first, packed one after
 * another in blocks: a record is its header and then its order number and
 * customer, as long as they are (about 56 bytes a charge, not twice their
 * bounds), and a block is freed once everything in it has expired. Memory
 * follows what was sent in the window, with no copy as it grows. */
struct sent {
	int64_t sub, amount, at, mono;
	unsigned char order_len, customer_len;
};

#define BLOCK_BYTES 65536

struct block {
	struct block *next;
	size_t used;
	unsigned char d[BLOCK_BYTES];
};

struct failover_recent {
	int seconds;
	struct block *head, *tail;
	size_t off; /* the first live record's offset in head */
	size_t n;   /* live records */
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
	while (r->head) {
		struct block *b = r->head;

		r->head = b->next;
		free(b);
	}
	free(r);
}

static time_t mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

/* A record's size: its header, then its two strings. */
static size_t record_size(const struct sent *h)
{
	return sizeof(*h) + h->order_len + h->customer_len;
}

/* The record at p (headers are copied out: records are not aligned), its
 * strings into order and customer; returns its size. */
static size_t record_read(const unsigned char *p, struct sent *h, char *order, char *customer)
{
	memcpy(h, p, sizeof(*h));
	memcpy(order, p + sizeof(*h), h->order_len);
	order[h->order_len] = '\0';
	memcpy(customer, p + sizeof(*h) + h->order_len, h->customer_len);
	customer[h->customer_len] = '\0';
	return record_size(h);
}

/* Drops the records older than a lease: their intents were committed long
 * enough ago to have reached any standby that is kept up. */
static void expire(struct failover_recent *r, time_t t)
{
	while (r->head) {
		struct block *b = r->head;
		struct sent h;

		if (r->off == b->used) {
			if (b == r->tail) {
				b->used = r->off = 0;
				return;
			}
			r->head = b->next;
			r->off = 0;
			free(b);
			continue;
		}
		memcpy(&h, b->d + r->off, sizeof(h));
		if (h.mono >= t - r->seconds)
			return;
		r->off += record_size(&h);
		r->n--;
	}
}

void failover_recent_add(struct failover_recent *r, const char *mch_order_no, int64_t sub,
                         const char *customer_id, int64_t amount, int64_t now)
{
	time_t t = mono_s();
	size_t lo = strnlen(mch_order_no, 31), lc = strnlen(customer_id, 31);
	struct sent h = {sub, amount, now, t, (unsigned char)lo, (unsigned char)lc};
	size_t need = record_size(&h);
	unsigned char *p;

	expire(r, t);
	if (!r->tail || r->tail->used + need > BLOCK_BYTES) {
		struct block *b = malloc(sizeof(*b));

		if (!b)
			abort();
		b->next = NULL;
		b->used = 0;
		if (r->tail)
			r->tail->next = b;
		else
			r->head = b;
		r->tail = b;
	}
	p = r->tail->d + r->tail->used;
	memcpy(p, &h, sizeof(h));
	memcpy(p + sizeof(h), mch_order_no, lo);
	memcpy(p + sizeof(h) + lo, customer_id, lc);
	r->tail->used += need;
	r->n++;
}

int failover_recent_restore(PGconn *c, struct failover_recent *r, char *err, size_t errlen)
{
	struct charges_sent s = {0};
	int n;
	char count[16], sent[16];

	if (r->n == 0)
		return 0;
	for (const struct block *b = r->head; b; b = b->next)
		for (size_t off = b == r->head ? r->off : 0; off < b->used;) {
			struct sent h;
			char order[32], customer[32];

			off += record_read(b->d + off, &h, order, customer);
			charges_sent_add(&s, order, h.sub, customer, h.amount, h.at);
		}
	n = charges_restore_sent(c, &s, err, errlen);
	charges_sent_free(&s);
	if (n > 0) {
		snprintf(count, sizeof(count), "%d", n);
		snprintf(sent, sizeof(sent), "%zu", r->n);
		log_event("warn", "intents_restored", "restored", count, "remembered", sent,
		          "detail",
		          "sent before the failover, unknown to this server: cc_query decides",
		          (char *)NULL);
	}
	return n;
}
