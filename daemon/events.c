/* events.c: the outbox's time-based events, its delivery and its reading.
 *
 * Delivery never touches the charge path: one thread with its own
 * connection claims due events (SKIP LOCKED, a lease longer than the
 * request timeout, so that several daemons share the work and never send
 * one event twice at once), keeps up to max_in_flight POSTs going through
 * libcurl's multi interface and records each attempt. Delivery is at least
 * once: a crash after the POST and before its record sends it again. */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "db.h"
#include "events.h"
#include "list.h"
#include "log.h"
#include "metrics.h"

#define DUE_EVERY_MS  10000 /* the time-based events' pass */
#define LEASE_EXTRA_S 30    /* beyond the request timeout */
#define IDLE_POLL_MS  1000  /* retries come due without a notification */
#define DOWN_MAX_MS   60000 /* the longest pause while the receiver cannot be reached */
#define TRIAL_NOTICE  "3 days"

/* ---- writing ---- */

int events_emit(PGconn *c, const char *type, const char *customer, const char *data_json,
                const char *once_key, char *err, size_t errlen)
{
	return db_run(c, err, errlen, "SELECT billing_event($1, $2, $3::jsonb, $4)", DB_S(type),
	              DB_S(customer && customer[0] ? customer : NULL), DB_S(data_json),
	              DB_S(once_key));
}

/* The first instant after a card's last day (MMYY, in UTC). */
#define CARD_END                                                                                   \
	"(make_timestamptz(2000 + substr(card_expiry, 3, 2)::int, substr(card_expiry, 1, "         \
	"2)::int, "                                                                                \
	"1, 0, 0, 0, 'UTC') + interval '1 month')"
#define CARD_KEY "'customer.card_expiring:' || customer_id || ':' || card_expiry"

static const char SQL_CARDS_EXPIRING[] =
    "SELECT count(billing_event('customer.card_expiring', customer_id,"
    "              event_customer_data(c) || jsonb_build_object('expires_at', " CARD_END "),"
    "              " CARD_KEY "))"
    "  FROM customers c"
    " WHERE state = 'bound' AND card_expiry ~ '^(0[1-9]|1[0-2])[0-9]{2}$'"
    "   AND " CARD_END " - interval '1 day' - make_interval(days => $2::int) <= to_timestamp($1)"
    "   AND NOT EXISTS (SELECT 1 FROM events e WHERE e.once_key = " CARD_KEY ")";

#define TRIAL_KEY                                                                                  \
	"'subscription.trial_ending:' || s.id || ':' || extract(epoch FROM s.trial_end)::bigint"

static const char SQL_TRIALS_ENDING[] =
    "SELECT count(billing_event('subscription.trial_ending', s.customer_id,"
    "              event_subscription_data(s), " TRIAL_KEY "))"
    "  FROM subscriptions s"
    " WHERE s.state = 'trialing' AND s.next_charge_at <= to_timestamp($1) + interval '" TRIAL_NOTICE
    "'"
    "   AND s.trial_end > to_timestamp($1)"
    "   AND s.trial_end <= to_timestamp($1) + interval '" TRIAL_NOTICE "'"
    "   AND NOT EXISTS (SELECT 1 FROM events e WHERE e.once_key = " TRIAL_KEY ")";

int events_due(PGconn *c, int card_days, int64_t now, int *written, char *err, size_t errlen)
{
	PGresult *r1 = NULL, *r2 = NULL;

	*written = 0;
	if (db_set_now(c, now, err, errlen) < 0 || db_begin(c, err, errlen) < 0)
		return -1;
	if (!(r1 = db_get(c, err, errlen, SQL_CARDS_EXPIRING, DB_I(now), DB_I(card_days))) ||
	    !(r2 = db_get(c, err, errlen, SQL_TRIALS_ENDING, DB_I(now))) ||
	    db_commit(c, err, errlen) < 0) {
		PQclear(r1);
		db_rollback(c);
		return -1;
	}
	*written = (int)(db_i64(r1, 0, 0) + db_i64(r2, 0, 0));
	PQclear(r1);
	PQclear(r2);
	return 0;
}

/* ---- delivery ---- */

struct delivery {
	struct list_node link; /* in flight */
	CURL *h;
	struct curl_slist *hdrs;
	int64_t id;
	int tries;
	char event_id[40];
	char *body;
	char errbuf[CURL_ERROR_SIZE];
};

struct events {
	pthread_t thread;
	pthread_mutex_t mu;
	struct cfg_events next; /* guarded by mu: what events_reload handed over */
	int reloaded;
	struct cfg_events cfg; /* the thread's own copy */
	char database_url[CFG_URL];
	char owner[96];
	int64_t (*clock)(void);
	atomic_int stop;
	PGconn *db;
	CURLM *multi;
	struct list flying;
	/* While the receiver cannot be reached, one event at a time probes it,
	 * after a pause doubling up to DOWN_MAX_MS: a receiver down for days
	 * costs the database a few writes a minute, not one per event. */
	long down_ms, down_until;
	int more; /* the last claim was full: claim again without waiting */
};

static long ms_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* Billing-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>. */
static void sign(const char *secret, long t, const char *body, char *out, size_t outlen)
{
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;
	char prefix[24];
	size_t n = strlen(body), plen;
	unsigned char *msg;
	int off;

	plen = (size_t)snprintf(prefix, sizeof(prefix), "%ld.", t);
	msg = malloc(plen + n);
	if (!msg)
		abort(); /* an unsigned delivery must never leave */
	memcpy(msg, prefix, plen);
	memcpy(msg + plen, body, n);
	HMAC(EVP_sha256(), secret, (int)strlen(secret), msg, plen + n, mac, &maclen);
	free(msg);
	off = snprintf(out, outlen, "Billing-Signature: t=%ld,v1=", t);
	for (unsigned int i = 0; i < maclen && (size_t)off + 3 <= outlen; i++)
		off += snprintf(out + off, outlen - (size_t)off, "%02x", mac[i]);
}

static size_t discard(char *p, size_t size, size_t n, void *u)
{
	(void)p;
	(void)u;
	return size * n;
}

static void delivery_free(struct delivery *d)
{
	if (!d)
		return;
	curl_slist_free_all(d->hdrs);
	curl_easy_cleanup(d->h);
	free(d->body);
	free(d);
}

/* Starts the POST of one claimed event; -1 if it could not be started
 * (its lease runs out and it is claimed again). */
static int send_one(struct events *e, PGresult *r, int i)
{
	struct delivery *d = calloc(1, sizeof(*d));
	char hdr[160];
	struct curl_slist *l;

	if (!d || !(d->h = curl_easy_init()) || !(d->body = strdup(db_str(r, i, 2)))) {
		delivery_free(d);
		return -1;
	}
	d->id = db_i64(r, i, 0);
	snprintf(d->event_id, sizeof(d->event_id), "%s", db_str(r, i, 1));
	d->tries = (int)db_i64(r, i, 3);
	l = curl_slist_append(NULL, "Content-Type: application/json");
	d->hdrs = l;
	snprintf(hdr, sizeof(hdr), "Billing-Event-Id: %s", d->event_id);
	l = l ? curl_slist_append(l, hdr) : NULL;
	sign(e->cfg.secret, (long)time(NULL), d->body, hdr, sizeof(hdr));
	l = l ? curl_slist_append(l, hdr) : NULL;
	explicit_bzero(hdr, sizeof(hdr));
	l = l ? curl_slist_append(l, "Expect:") : NULL;
	if (!l) {
		delivery_free(d);
		return -1;
	}
	curl_easy_setopt(d->h, CURLOPT_URL, e->cfg.url);
	curl_easy_setopt(d->h, CURLOPT_HTTPHEADER, d->hdrs);
	curl_easy_setopt(d->h, CURLOPT_POSTFIELDS, d->body);
	curl_easy_setopt(d->h, CURLOPT_POSTFIELDSIZE, (long)strlen(d->body));
	curl_easy_setopt(d->h, CURLOPT_TIMEOUT_MS, e->cfg.timeout_ms);
	curl_easy_setopt(d->h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(d->h, CURLOPT_WRITEFUNCTION, discard);
	curl_easy_setopt(d->h, CURLOPT_ERRORBUFFER, d->errbuf);
	curl_easy_setopt(d->h, CURLOPT_PRIVATE, d);
	if (curl_multi_add_handle(e->multi, d->h) != CURLM_OK) {
		delivery_free(d);
		return -1;
	}
	list_push(&e->flying, &d->link);
	return 0;
}

static void unlink_delivery(struct events *e, struct delivery *d)
{
	curl_multi_remove_handle(e->multi, d->h);
	list_unlink(&e->flying, &d->link);
}

/* now(), not clock_timestamp(): a volatile bound would keep the claim off
 * the partial index and sort the whole backlog at every claim. */
static const char SQL_CLAIM[] =
    "UPDATE events SET lease_owner = $1,"
    "       lease_expires_at = now() + make_interval(secs => $2::int)"
    " WHERE id IN (SELECT id FROM events"
    "               WHERE status = 'pending' AND next_attempt_at <= now()"
    "                 AND (lease_expires_at IS NULL OR lease_expires_at <= now())"
    "               ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED)"
    " RETURNING id, event_id, body, tries";

static int claim(struct events *e, char *err, size_t errlen)
{
	int room = e->cfg.max_in_flight - e->flying.n;
	PGresult *r;

	if (e->down_ms && (ms_now() < e->down_until || e->flying.n)) {
		e->more = 0;
		return 0;
	}
	if (e->down_ms)
		room = 1;
	/* a statement for several events, unless nothing is in flight */
	if (room <= 0 || (e->flying.n && room < e->cfg.max_in_flight / 4 + 1))
		return 0;
	e->more = 0;
	r = db_get(e->db, err, errlen, SQL_CLAIM, DB_S(e->owner),
	           DB_I(e->cfg.timeout_ms / 1000 + LEASE_EXTRA_S), DB_I(room));
	if (!r)
		return -1;
	e->more = PQntuples(r) == room;
	for (int i = 0; i < PQntuples(r); i++)
		send_one(e, r, i);
	PQclear(r);
	return 0;
}

/* The attempt, and the event delivered, failed (retries used up) or due
 * again after its next delay, in one statement. Only the lease owner moves
 * the event; a lost lease still leaves the attempt on record. */
static const char SQL_RECORD[] =
    "WITH a AS (INSERT INTO event_attempts (event_id, http_status, latency_ms, error, owner)"
    "           VALUES ($1, $2, $3, $4, $5))"
    " UPDATE events SET lease_owner = NULL, lease_expires_at = NULL, tries = tries + 1,"
    "        status = CASE WHEN $6 THEN 'delivered' WHEN $7::int < 0 THEN 'failed'"
    "                      ELSE 'pending' END,"
    "        delivered_at = CASE WHEN $6 THEN clock_timestamp() END,"
    "        next_attempt_at = clock_timestamp() + make_interval(secs => greatest($7::int, 0))"
    "  WHERE id = $1 AND lease_owner = $5";

static void record(struct events *e, struct delivery *d, CURLcode cc)
{
	char status[24], err[512];
	const char *why = NULL;
	long http = 0;
	double secs = 0;
	int ok;

	curl_easy_getinfo(d->h, CURLINFO_RESPONSE_CODE, &http);
	curl_easy_getinfo(d->h, CURLINFO_TOTAL_TIME, &secs);
	ok = cc == CURLE_OK && http >= 200 && http < 300;
	if (cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST) {
		/* the first failure of a round (or a failed probe) lengthens the pause */
		if (ms_now() >= e->down_until) {
			e->down_ms = e->down_ms ? e->down_ms * 2 : 1000;
			if (e->down_ms > DOWN_MAX_MS)
				e->down_ms = DOWN_MAX_MS;
			e->down_until = ms_now() + e->down_ms;
		}
	} else {
		e->down_ms = 0;
	}
	snprintf(status, sizeof(status), "%ld", http);
	if (cc != CURLE_OK)
		why = d->errbuf[0] ? d->errbuf : curl_easy_strerror(cc);
	else if (!ok)
		why = "not a 2xx answer";
	metrics_event_delivery(ok ? "delivered" : cc == CURLE_OK ? "rejected" : "error");
	if (db_run(e->db, err, sizeof(err), SQL_RECORD, DB_I(d->id), DB_N(http), DB_I(secs * 1000),
	           DB_S(why), DB_S(e->owner), DB_S(ok ? "true" : "false"),
	           DB_I(d->tries < e->cfg.nretry ? e->cfg.retry[d->tries] : -1L)) < 0)
		log_event("error", "event_record", "event", d->event_id, "error", err,
		          (char *)NULL);
	else if (!ok)
		log_event("warn", "event_not_delivered", "event", d->event_id, "http", status,
		          "error", why, (char *)NULL);
}

static void finish_done(struct events *e)
{
	CURLMsg *m;
	int left;

	while ((m = curl_multi_info_read(e->multi, &left))) {
		struct delivery *d = NULL;

		if (m->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&d);
		unlink_delivery(e, d);
		record(e, d, m->data.result);
		delivery_free(d);
	}
}

/* Gives back what is in flight: sent again by whoever claims it next. */
static void give_back(struct events *e)
{
	char err[512];

	while (e->flying.head) {
		struct delivery *d = LIST_ITEM(e->flying.head, struct delivery, link);
		unlink_delivery(e, d);
		delivery_free(d);
	}
	if (!db_is_down(e->db))
		db_run(e->db, err, sizeof(err),
		       "UPDATE events SET lease_owner = NULL, lease_expires_at = NULL"
		       " WHERE lease_owner = $1 AND status = 'pending'",
		       DB_S(e->owner));
}

static int connect_db(struct events *e, char *err, size_t errlen)
{
	PQfinish(e->db);
	e->db = db_connect(e->database_url, e->owner, err, errlen);
	if (!e->db)
		return -1;
	return events_listen(e->db, err, errlen);
}

static void *events_main(void *arg)
{
	struct events *e = arg;
	long next_due = 0, backoff_until = 0;
	char err[512];
	int written;

	while (!atomic_load(&e->stop)) {
		struct curl_waitfd wfd = {.events = CURL_WAIT_POLLIN};
		int running = 0;

		pthread_mutex_lock(&e->mu);
		if (e->reloaded) {
			e->cfg = e->next;
			e->reloaded = 0;
		}
		pthread_mutex_unlock(&e->mu);
		if (db_is_down(e->db) && ms_now() >= backoff_until) {
			if (connect_db(e, err, sizeof(err)) < 0) {
				log_event("error", "events_database", "error", err, (char *)NULL);
				backoff_until = ms_now() + 5000;
			}
		}
		if (!db_is_down(e->db) && ms_now() >= next_due) {
			if (events_due(e->db, e->cfg.card_expiring_days, e->clock(), &written, err,
			               sizeof(err)) < 0)
				log_event("error", "events_due", "error", err, (char *)NULL);
			next_due = ms_now() + DUE_EVERY_MS;
		}
		if (!db_is_down(e->db) && e->cfg.url[0] && claim(e, err, sizeof(err)) < 0)
			log_event("error", "events_claim", "error", err, (char *)NULL);
		curl_multi_perform(e->multi, &running);
		finish_done(e);
		wfd.fd = db_is_down(e->db) ? -1 : PQsocket(e->db);
		curl_multi_poll(e->multi, wfd.fd >= 0 ? &wfd : NULL, wfd.fd >= 0 ? 1 : 0,
		                e->flying.n ? 100
		                : e->more   ? 0
		                            : IDLE_POLL_MS,
		                NULL);
		if (!db_is_down(e->db))
			events_wait(e->db, 0); /* drains the notifications */
		curl_multi_perform(e->multi, &running);
		finish_done(e);
	}
	give_back(e);
	return NULL;
}

struct events *events_start(const struct cfg *c, int64_t (*clock)(void), const char *owner,
                            char *err, size_t errlen)
{
	struct events *e = calloc(1, sizeof(*e));

	if (!e || !(e->multi = curl_multi_init())) {
		free(e);
		snprintf(err, errlen, "events: out of memory");
		return NULL;
	}
	e->cfg = c->events;
	e->clock = clock;
	snprintf(e->database_url, sizeof(e->database_url), "%s", c->database_url);
	snprintf(e->owner, sizeof(e->owner), "%s:events", owner);
	pthread_mutex_init(&e->mu, NULL);
	if (pthread_create(&e->thread, NULL, events_main, e) != 0) {
		curl_multi_cleanup(e->multi);
		pthread_mutex_destroy(&e->mu);
		free(e);
		snprintf(err, errlen, "events: cannot start the delivery thread");
		return NULL;
	}
	log_event("info", "events_started", "url", c->events.url[0] ? c->events.url : "(none)",
	          (char *)NULL);
	return e;
}

void events_reload(struct events *e, const struct cfg_events *ec)
{
	if (!e)
		return;
	pthread_mutex_lock(&e->mu);
	e->next = *ec;
	e->reloaded = 1;
	pthread_mutex_unlock(&e->mu);
}

void events_stop(struct events *e)
{
	if (!e)
		return;
	atomic_store(&e->stop, 1);
	curl_multi_wakeup(e->multi);
	pthread_join(e->thread, NULL);
	curl_multi_cleanup(e->multi);
	PQfinish(e->db);
	pthread_mutex_destroy(&e->mu);
	explicit_bzero(e->cfg.secret, sizeof(e->cfg.secret));
	explicit_bzero(e->next.secret, sizeof(e->next.secret));
	free(e);
}
