/* test_events.c: the outbox of events and its delivery, against a real
 * database, the fake gateway and a real HTTP receiver written here, which
 * checks every signature with its own HMAC-SHA256 (built on SHA-256 alone)
 * and records each event id: events are written with the change they
 * report and at the billing clock, never without it; every type the
 * scheduler, the admin verbs and the time-based pass produce; delivery
 * through a receiver answering 500 and hanging, and through one that is
 * down and comes back; replay; the metrics. */
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <cmocka.h>
#include <microhttpd.h>
#include <openssl/evp.h>

#include "db.h"
#include "events.h"
#include "gateway.h"
#include "metrics.h"
#include "plans.h"
#include "scheduler.h"
#include "subscriptions.h"
#include "support.h"

#define DAY    86400L
#define SECRET "whsec_test_0123456789"
#define T0     1780000000L /* 2026-05-28T20:26:40Z: the billing clock of these tests */

static int64_t test_clock(void)
{
	return T0;
}

/* ---- database helpers ---- */

static void sql(PGconn *c, const char *q, const char *p1)
{
	const char *p[1] = {p1};
	char err[512];

	if (db_exec(c, q, p1 ? 1 : 0, p, err, sizeof(err)) < 0)
		fail_msg("%s: %s", q, err);
}

static long num(PGconn *c, const char *q, const char *p1)
{
	const char *p[1] = {p1};
	char err[512];
	PGresult *r = db_query(c, q, p1 ? 1 : 0, p, err, sizeof(err));
	long v;

	if (!r)
		fail_msg("%s: %s", q, err);
	v = PQntuples(r) ? (long)db_i64(r, 0, 0) : -1;
	PQclear(r);
	return v;
}

static char *text(PGconn *c, const char *q, const char *p1)
{
	const char *p[1] = {p1};
	char err[512], *s;
	PGresult *r = db_query(c, q, p1 ? 1 : 0, p, err, sizeof(err));

	if (!r)
		fail_msg("%s: %s", q, err);
	s = strdup(PQntuples(r) ? db_str(r, 0, 0) : "(none)");
	PQclear(r);
	return s;
}

/* The types of customer's events in seq order, comma-separated. */
static char *types_of(PGconn *c, const char *customer)
{
	return text(c,
	            "SELECT string_agg(type, ',' ORDER BY seq) FROM events WHERE customer_id = $1",
	            customer);
}

/* ---- the receiver ---- */

/* HMAC-SHA256 from its definition (RFC 2104), so that the test does not
 * check the daemon's signing with the daemon's own call. */
static void sha256(const unsigned char *a, size_t na, const unsigned char *b, size_t nb,
                   unsigned char out[32])
{
	EVP_MD_CTX *x = EVP_MD_CTX_new();
	unsigned int n = 0;

	EVP_DigestInit_ex(x, EVP_sha256(), NULL);
	EVP_DigestUpdate(x, a, na);
	EVP_DigestUpdate(x, b, nb);
	EVP_DigestFinal_ex(x, out, &n);
	EVP_MD_CTX_free(x);
}

static void hmac_hex(const char *key, const char *msg, size_t n, char hex[65])
{
	unsigned char k[64] = {0}, ipad[64], opad[64], inner[32], mac[32];

	memcpy(k, key, strlen(key)); /* shorter than a block */
	for (int i = 0; i < 64; i++) {
		ipad[i] = k[i] ^ 0x36;
		opad[i] = k[i] ^ 0x5c;
	}
	sha256(ipad, 64, (const unsigned char *)msg, n, inner);
	sha256(opad, 64, inner, 32, mac);
	for (int i = 0; i < 32; i++)
		sprintf(hex + 2 * i, "%02x", mac[i]);
}

#define MAX_REQ 8192

struct receiver {
	struct MHD_Daemon *d;
	int port;
	pthread_mutex_t mu;
	int fail_first; /* answer 500 to this many first requests */
	int hang_every; /* then hang (past the client's timeout) on every n-th; 0: never */
	int delay_ms;   /* before every answer */
	int nreq;       /* requests seen */
	int bad;        /* bad signatures, headers or bodies */
	char ids[MAX_REQ][40];
	int status[MAX_REQ];
	int64_t seq[MAX_REQ];
	char type[MAX_REQ][32];  /* the body's type */
	char order[MAX_REQ][31]; /* and its data.mch_order_no ("" when none) */
	char last_sig[160];      /* the last request's Billing-Signature and body */
	char last_body[4096];
};

static struct receiver rcv;

struct upload {
	char *body;
	size_t len;
};

/* One request: verified, recorded, answered as the plan says. */
static int judge(struct MHD_Connection *con, const char *body, size_t len, char id[40])
{
	const char *sig = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "Billing-Signature");
	const char *eid = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "Billing-Event-Id");
	const char *ct = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "Content-Type");
	char hex[65], want[65], *msg;
	long t = 0;
	int ok = 1;

	if (!sig || sscanf(sig, "t=%ld,v1=%64s", &t, hex) != 2 || labs(t - time(NULL)) > 300)
		return 0;
	msg = malloc(len + 32);
	assert_non_null(msg);
	int n = snprintf(msg, 32, "%ld.", t);
	memcpy(msg + n, body, len);
	hmac_hex(SECRET, msg, (size_t)n + len, want);
	free(msg);
	ok = strcmp(want, hex) == 0;
	ok = ok && ct && strcmp(ct, "application/json") == 0 && eid;
	ok = ok && strncmp(body, "{\"id\":\"", 7) == 0 && strncmp(body + 7, eid, strlen(eid)) == 0;
	snprintf(id, 40, "%s", eid ? eid : "");
	return ok;
}

/* The type and the order number of a body, as the receiver's own JSON
 * parsing reads them. */
static void read_body(const char *body, char type[32], char order[31])
{
	cJSON *j = body ? cJSON_Parse(body) : NULL;
	const char *t = cJSON_GetStringValue(cJSON_GetObjectItem(j, "type"));
	const char *o = cJSON_GetStringValue(
	    cJSON_GetObjectItem(cJSON_GetObjectItem(j, "data"), "mch_order_no"));

	snprintf(type, 32, "%s", t ? t : "");
	snprintf(order, 31, "%s", o ? o : "");
	cJSON_Delete(j);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *con, const char *url,
                                  const char *method, const char *version, const char *data,
                                  size_t *size, void **ctx)
{
	struct upload *u = *ctx;
	struct MHD_Response *resp;
	enum MHD_Result ret;
	char id[40] = "";
	const char *seqp;
	int k, code, good, hang;

	(void)cls;
	(void)url;
	(void)method;
	(void)version;
	if (!u) {
		*ctx = calloc(1, sizeof(struct upload));
		return *ctx ? MHD_YES : MHD_NO;
	}
	if (*size) {
		char *b = realloc(u->body, u->len + *size + 1);
		assert_non_null(b);
		memcpy(b + u->len, data, *size);
		u->body = b;
		u->len += *size;
		u->body[u->len] = '\0';
		*size = 0;
		return MHD_YES;
	}
	good = u->body && judge(con, u->body, u->len, id);
	pthread_mutex_lock(&rcv.mu);
	k = rcv.nreq++;
	hang = k >= rcv.fail_first && rcv.hang_every && k % rcv.hang_every == rcv.hang_every - 1;
	code = !good ? 400 : k < rcv.fail_first || hang ? 500 : 200;
	if (!good)
		rcv.bad++;
	snprintf(rcv.last_sig, sizeof(rcv.last_sig), "%s",
	         MHD_lookup_connection_value(con, MHD_HEADER_KIND, "Billing-Signature"));
	snprintf(rcv.last_body, sizeof(rcv.last_body), "%s", u->body ? u->body : "");
	if (k < MAX_REQ) {
		snprintf(rcv.ids[k], sizeof(rcv.ids[k]), "%s", id);
		rcv.status[k] = hang ? 0 : code; /* a hung request is never acknowledged */
		seqp = u->body ? strstr(u->body, "\"seq\":") : NULL;
		rcv.seq[k] = seqp ? atoll(seqp + 6) : 0;
		read_body(u->body, rcv.type[k], rcv.order[k]);
	}
	pthread_mutex_unlock(&rcv.mu);
	if (hang)
		usleep(1500 * 1000); /* past events.timeout_ms */
	if (rcv.delay_ms)
		usleep((useconds_t)rcv.delay_ms * 1000);
	resp = MHD_create_response_from_buffer(2, (void *)"ok", MHD_RESPMEM_PERSISTENT);
	ret = MHD_queue_response(con, (unsigned)code, resp);
	MHD_destroy_response(resp);
	return ret;
}

static void on_completed(void *cls, struct MHD_Connection *con, void **ctx,
                         enum MHD_RequestTerminationCode toe)
{
	struct upload *u = *ctx;

	(void)cls;
	(void)con;
	(void)toe;
	if (u)
		free(u->body);
	free(u);
	*ctx = NULL;
}

/* Starts the receiver on port (0: any free one). */
static void receiver_start(int port, int fail_first, int hang_every)
{
	const union MHD_DaemonInfo *di;

	rcv.fail_first = fail_first;
	rcv.hang_every = hang_every;
	rcv.d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION,
	                         (uint16_t)port, NULL, NULL, on_request, NULL,
	                         MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_END);
	assert_non_null(rcv.d);
	di = MHD_get_daemon_info(rcv.d, MHD_DAEMON_INFO_BIND_PORT);
	rcv.port = di->port;
}

static void receiver_stop(void)
{
	if (rcv.d)
		MHD_stop_daemon(rcv.d);
	rcv.d = NULL;
}

static void receiver_reset(void)
{
	pthread_mutex_lock(&rcv.mu);
	rcv.nreq = rcv.bad = rcv.delay_ms = 0;
	pthread_mutex_unlock(&rcv.mu);
}

/* ---- fixtures ---- */

static struct cfg cfg;
static char db_url[512];
static PGconn *db;

static void use_db(const char *name)
{
	char err[512];

	snprintf(db_url, sizeof(db_url), "%s", ts_db_new(name));
	ts_cfg(&cfg, db_url, NULL);
	assert_int_equal(cfg_apply_timezone(&cfg, err, sizeof(err)), 0);
	db = ts_db_connect(db_url);
	assert_int_equal(db_set_now(db, T0, err, sizeof(err)), 0);
}

/* n events for customers c0..c(k-1), in one transaction. */
static void emit_many(int n, int k)
{
	char err[512], cust[16], data[64];

	sql(db, "BEGIN", NULL);
	for (int i = 0; i < n; i++) {
		snprintf(cust, sizeof(cust), "c%d", i % k);
		snprintf(data, sizeof(data), "{\"n\":%d}", i);
		if (events_emit(db, "charge.succeeded", cust, data, NULL, err, sizeof(err)) < 0)
			fail_msg("emit: %s", err);
	}
	sql(db, "COMMIT", NULL);
}

static struct events *deliver_to(int port, long timeout_ms, const char *retry)
{
	char err[512], yaml_retry[128];
	struct events *e;

	snprintf(cfg.events.url, sizeof(cfg.events.url), "http://127.0.0.1:%d/hook", port);
	snprintf(cfg.events.secret, sizeof(cfg.events.secret), "%s", SECRET);
	cfg.events.timeout_ms = timeout_ms;
	cfg.events.max_in_flight = 8;
	/* the schedule as the configuration would give it */
	snprintf(yaml_retry, sizeof(yaml_retry), "%s", retry);
	cfg.events.nretry = 0;
	for (char *s = strtok(yaml_retry, ","); s; s = strtok(NULL, ","))
		cfg.events.retry[cfg.events.nretry++] = atol(s);
	e = events_start(&cfg, test_clock, "test", err, sizeof(err));
	assert_non_null(e);
	return e;
}

static long wait_for(const char *q, long want, long timeout_ms)
{
	return ts_db_wait(db_url, q, want, timeout_ms);
}

/* ---- the outbox ---- */

static void test_no_event_without_the_clock(void **state)
{
	char err[512];
	PGconn *c;

	(void)state;
	use_db("events_clock");
	sql(db, "INSERT INTO customers (customer_id) VALUES ('nc1')", NULL);
	c = db_connect(db_url, "no-clock", err, sizeof(err));
	assert_non_null(c);
	assert_int_equal(db_exec(c,
	                         "UPDATE customers SET state = 'bound' WHERE customer_id = 'nc1'",
	                         0, NULL, err, sizeof(err)),
	                 -1);
	assert_non_null(strstr(err, "billing clock is not set"));
	PQfinish(c);
	/* nothing half-written: no change without its event */
	assert_int_equal(num(db, "SELECT count(*) FROM customers WHERE state = 'bound'", NULL), 0);
	assert_int_equal(num(db, "SELECT count(*) FROM events", NULL), 0);
	/* a rolled-back change leaves no event */
	sql(db, "BEGIN", NULL);
	sql(db, "UPDATE customers SET state = 'bound' WHERE customer_id = 'nc1'", NULL);
	sql(db, "ROLLBACK", NULL);
	assert_int_equal(num(db, "SELECT count(*) FROM events", NULL), 0);
	sql(db, "UPDATE customers SET state = 'bound' WHERE customer_id = 'nc1'", NULL);
	assert_int_equal(num(db, "SELECT count(*) FROM events WHERE type = 'customer.bound'", NULL),
	                 1);
	PQfinish(db);
}

static void test_body_format_and_seq(void **state)
{
	char *body, *s;

	(void)state;
	use_db("events_body");
	emit_many(6, 2);
	/* seq counts per customer */
	s = text(db,
	         "SELECT string_agg(seq::text, ',' ORDER BY id) FROM events WHERE customer_id = $1",
	         "c1");
	assert_string_equal(s, "1,2,3");
	free(s);
	body = text(db, "SELECT body FROM events WHERE customer_id = 'c0' AND seq = 2", NULL);
	s = text(db, "SELECT event_id FROM events WHERE customer_id = 'c0' AND seq = 2", NULL);
	{
		char want[512];
		/* created: the billing clock T0, ISO 8601 with its offset */
		snprintf(
		    want, sizeof(want),
		    "{\"id\":\"%s\",\"type\":\"charge.succeeded\",\"created\":\"2026-05-28T20:26:"
		    "40+00:00\",\"seq\":2,\"data\":{\"n\": 2}}",
		    s);
		assert_string_equal(body, want);
	}
	assert_int_equal(strlen(s), 36);
	assert_int_equal(strncmp(s, "evt_", 4), 0);
	free(s);
	free(body);
	PQfinish(db);
}

/* Every state change of a subscription's life through the scheduler and
 * the admin verbs, in order, each at the clock of the pass that made it. */
static void test_lifecycle_types(void **state)
{
	struct ts_fakegw fake;
	struct gw_client *gw;
	struct sched *s;
	struct subscription sub;
	struct sched_stats st = {0};
	char err[512], id[24], *types;
	long sid, start = T0;

	(void)state;
	ts_fakegw_start(&fake, NULL);
	use_db("events_life");
	ts_cfg(&cfg, db_url, &fake);
	gw = gw_client_new(&cfg.gateway, err, sizeof(err));
	assert_non_null(gw);
	s = sched_new(&cfg, db, gw, "test-events");
	assert_non_null(s);
	ts_sync_plans(db);
	ts_enrol(db, gw, "life1", NULL);
	sid = ts_subscribe(db, "life1", "weekly", start);
	snprintf(id, sizeof(id), "%ld", sid);
	assert_int_equal(sched_pass(s, start, &st, err, sizeof(err)), 0);
	assert_int_equal(
	    ts_fakegw_post(&fake, "decline", "{\"customerId\":\"life1\",\"count\":1}", NULL), 200);
	assert_int_equal(sched_pass(s, start + 7 * DAY, &st, err, sizeof(err)), 0);
	assert_int_equal(subscriptions_pause(db, sid, start + 7 * DAY, &sub, err, sizeof(err)), 0);
	assert_int_equal(subscriptions_resume(db, sid, start + 8 * DAY, &sub, err, sizeof(err)), 0);
	assert_int_equal(subscriptions_cancel(db, sid, 0, &sub, err, sizeof(err)), 0);
	types = types_of(db, "life1");
	assert_string_equal(types, "customer.bound,subscription.created,charge.succeeded,"
	                           "charge.failed,subscription.past_due,subscription.paused,"
	                           "subscription.resumed,subscription.canceled");
	free(types);
	/* the decline carries its next retry; created is the pass's clock */
	assert_int_equal(num(db,
	                     "SELECT count(*) FROM events WHERE type = 'charge.failed'"
	                     " AND body::jsonb #>> '{data,next_retry_at}' IS NOT NULL"
	                     " AND created_at = to_timestamp($1)",
	                     "1780604800"),
	                 1);
	assert_int_equal(num(db,
	                     "SELECT count(*) FROM events WHERE type = 'charge.succeeded'"
	                     " AND (body::jsonb #>> '{data,subscription_id}')::bigint = $1"
	                     " AND body::jsonb #>> '{data,state}' = 'succeeded'"
	                     " AND created_at = to_timestamp(1780000000)",
	                     id),
	                 1);
	sched_free(s);
	gw_client_free(gw);
	PQfinish(db);
	ts_fakegw_stop(&fake);
}

/* Trial ending and card expiring: once each, however often the pass runs. */
static void test_time_based_once(void **state)
{
	int n;
	char err[512], *types;

	(void)state;
	use_db("events_time");
	ts_sync_plans(db);
	sql(db,
	    "INSERT INTO customers (customer_id, state, card_expiry) VALUES ('tb1', 'bound', "
	    "'0626')",
	    NULL);
	ts_subscribe(db, "tb1", "monthly", T0 - 12 * DAY); /* a 14-day trial: 2 days left */
	/* the card's last day is 2026-06-30: 33 days after T0 */
	assert_int_equal(events_due(db, 32, T0, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 1);
	assert_int_equal(events_due(db, 33, T0, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 1);
	assert_int_equal(events_due(db, 33, T0 + 3600, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 0);
	types = types_of(db, "tb1");
	assert_string_equal(types, "customer.bound,subscription.created,subscription.trial_ending,"
	                           "customer.card_expiring");
	free(types);
	PQfinish(db);
}

/* ---- delivery ---- */

/* Each event id acknowledged exactly once; no more requests per id than
 * attempts recorded for it (a receiver that was down saw fewer); every
 * signature good. The receiver is stopped:
 * its records are read without its lock. */
static void check_receiver(int nevents)
{
	int acked = 0;

	assert_int_equal(rcv.bad, 0);
	for (int i = 0; i < rcv.nreq && i < MAX_REQ; i++) {
		int acks = 0, reqs = 0;
		if (rcv.status[i] != 200)
			continue;
		acked++;
		for (int j = 0; j < rcv.nreq && j < MAX_REQ; j++) {
			if (strcmp(rcv.ids[j], rcv.ids[i]) != 0)
				continue;
			reqs++;
			acks += rcv.status[j] == 200;
		}
		if (acks != 1) {
			char *att =
			    text(db,
			         "SELECT string_agg(coalesce(http_status, 0) || ' ' || "
			         "coalesce(error, '') || ' ' || latency_ms, '; ' ORDER BY a.id)"
			         " FROM event_attempts a JOIN events e ON e.id = a.event_id"
			         " WHERE e.event_id = $1",
			         rcv.ids[i]);
			fail_msg("%s acknowledged %d times in %d requests; attempts: %s",
			         rcv.ids[i], acks, reqs, att);
		}
		/* every request was an attempt; every answer was a request */
		assert_in_range(reqs,
		                num(db,
		                    "SELECT count(http_status) FROM event_attempts a JOIN events e"
		                    " ON e.id = a.event_id WHERE e.event_id = $1",
		                    rcv.ids[i]),
		                num(db,
		                    "SELECT count(*) FROM event_attempts a JOIN events e"
		                    " ON e.id = a.event_id WHERE e.event_id = $1",
		                    rcv.ids[i]));
	}
	assert_int_equal(acked, nevents);
}

static void test_faulty_receiver_gets_everything(void **state)
{
	const int n = 60;
	struct events *e;
	char *m = NULL, err[512];

	(void)state;
	use_db("events_faulty");
	receiver_reset();
	/* 500 to the first 40 % of the requests, then a hang on one in 20 */
	receiver_start(0, (n * 4) / 10, 20);
	emit_many(n, 7);
	e = deliver_to(rcv.port, 500, "1,1,1,1,1,1,1,1");
	assert_int_equal(
	    wait_for("SELECT count(*) FROM events WHERE status = 'delivered'", n, 60000), n);
	events_stop(e);
	receiver_stop();
	check_receiver(n);
	assert_int_equal(num(db, "SELECT count(*) FROM events WHERE lease_owner IS NOT NULL", NULL),
	                 0);
	assert_int_equal(metrics_render(db, 1, T0, &m, err, sizeof(err)), 0);
	assert_non_null(strstr(m, "\nbilling_events_pending 0\n"));
	assert_non_null(strstr(m, "billing_event_deliveries_total{result=\"rejected\"}"));
	free(m);
	PQfinish(db);
}

static void test_receiver_down_then_back(void **state)
{
	const int n = 25;
	struct events *e;
	char *m = NULL, err[512], want[64];
	int port;

	(void)state;
	use_db("events_down");
	receiver_reset();
	receiver_start(0, 0, 0);
	port = rcv.port;
	receiver_stop(); /* down for the whole run */
	emit_many(n, 5);
	e = deliver_to(port, 3000, "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1");
	/* a first round of max_in_flight (8), then one event at a time probes
	 * it after growing pauses (1 s, 2 s, 4 s, ...) */
	assert_int_equal(wait_for("SELECT count(*) FROM event_attempts", 10, 20000), 10);
	usleep(500 * 1000);
	assert_int_equal(num(db, "SELECT count(*) FROM event_attempts", NULL), 10);
	assert_int_equal(num(db, "SELECT count(*) FROM events WHERE status = 'pending'", NULL), n);
	assert_int_equal(metrics_render(db, 1, T0, &m, err, sizeof(err)), 0);
	snprintf(want, sizeof(want), "\nbilling_events_pending %d\n", n);
	assert_non_null(strstr(m, want));
	free(m);
	receiver_start(port, 0, 0);
	assert_int_equal(
	    wait_for("SELECT count(*) FROM events WHERE status = 'delivered'", n, 30000), n);
	events_stop(e);
	receiver_stop();
	check_receiver(n);
	PQfinish(db);
}

/* Retries used up: failed, kept; a replay sends it again with the same id. */
static void test_failed_then_replayed(void **state)
{
	struct events *e;
	char err[512], *eid;
	int n;

	(void)state;
	use_db("events_replay");
	receiver_reset();
	receiver_start(0, 1000000, 0); /* 500 to everything */
	emit_many(1, 1);
	e = deliver_to(rcv.port, 500, "1,1");
	assert_int_equal(wait_for("SELECT count(*) FROM events WHERE status = 'failed'", 1, 20000),
	                 1);
	assert_int_equal(num(db, "SELECT count(*) FROM event_attempts", NULL), 3);
	receiver_stop();
	receiver_reset();
	receiver_start(rcv.port, 0, 0);
	eid = text(db, "SELECT event_id FROM events", NULL);
	assert_int_equal(events_replay(db, eid, NULL, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 1);
	assert_int_equal(
	    wait_for("SELECT count(*) FROM events WHERE status = 'delivered'", 1, 20000), 1);
	events_stop(e);
	receiver_stop();
	assert_string_equal(rcv.ids[0], eid);
	assert_int_equal(num(db, "SELECT count(*) FROM event_attempts", NULL), 4);
	free(eid);
	PQfinish(db);
}

/* billingd: no events.url, then SIGHUP with a URL and a secret file: the
 * events written meanwhile are delivered, signed with that secret; then
 * SIGHUP with another secret: the receiver sees it (and refuses it). */
/* The configuration of billingd in dir: events to url signed with secret;
 * the gateway g (NULL: none) and more yaml settings (may be ""). */
static void write_config_with(const char *dir, const char *url, const char *secret,
                              const struct ts_fakegw *g, const char *more)
{
	char extra[1024], path[600];
	FILE *f;

	snprintf(path, sizeof(path), "%s/events.secret", dir);
	f = fopen(path, "w");
	assert_non_null(f);
	fprintf(f, "%s\n", secret);
	fclose(f);
	chmod(path, 0600);
	snprintf(extra, sizeof(extra),
	         "listen:\n  address: 127.0.0.1:0\n"
	         "events:\n  url: \"%s\"\n  secret_file: events.secret\n"
	         "  timeout_ms: 2000\n  retry: [1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s]\n%s",
	         url, more);
	ts_write_config(dir, db_url, g, extra);
}

static void write_events_config(const char *dir, const char *url, const char *secret)
{
	write_config_with(dir, url, secret, NULL, "");
}

static void test_sighup_reloads_events(void **state)
{
	char dir[] = "/tmp/test_events.XXXXXX", url[64], log[700], cfgpath[600];
	const char *argv[] = {ts_bin("billingd"), "-c", cfgpath, NULL};
	char env_db[600];
	const char *env[] = {env_db, NULL};
	pid_t pid;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(cfgpath, sizeof(cfgpath), "%s/billing.yaml", dir);
	snprintf(log, sizeof(log), "%s/billingd.log", dir);
	use_db("events_sighup");
	ts_sync_plans(db);
	receiver_reset();
	receiver_start(0, 0, 0);
	write_events_config(dir, "", SECRET);
	snprintf(env_db, sizeof(env_db), "DATABASE_URL=%s", db_url); /* not the harness's */
	pid = ts_spawn(argv, env, log);
	emit_many(3, 1);
	usleep(1500 * 1000);
	assert_int_equal(rcv.nreq, 0); /* written, not sent */
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/hook", rcv.port);
	write_events_config(dir, url, SECRET);
	kill(pid, SIGHUP);
	assert_int_equal(
	    wait_for("SELECT count(*) FROM events WHERE status = 'delivered'", 3, 20000), 3);
	assert_int_equal(rcv.bad, 0);
	write_events_config(dir, url, "another-secret");
	kill(pid, SIGHUP);
	usleep(1000 * 1000); /* the reload is taken between two passes */
	emit_many(1, 1);
	assert_int_equal(wait_for("SELECT count(*) FROM event_attempts a JOIN events e"
	                          " ON e.id = a.event_id WHERE e.seq = 4",
	                          1, 20000),
	                 1);
	kill(pid, SIGTERM);
	assert_true(ts_wait_pid(pid, 10000) >= 0);
	receiver_stop();
	assert_true(rcv.bad >= 1);
	{
		/* the secrets never reach the log */
		char *text_log = ts_read_file(log);
		assert_null(strstr(text_log, SECRET));
		assert_null(strstr(text_log, "another-secret"));
		free(text_log);
	}
	snprintf(log, sizeof(log), "rm -rf '%s'", dir);
	assert_int_equal(system(log), 0);
	PQfinish(db);
}

/* kill -9 while delivering: after a restart every event is delivered; only
 * the requests in flight at the kill (unrecorded) may come twice. */
static void test_kill9_while_delivering(void **state)
{
	const int n = 300;
	char dir[] = "/tmp/test_events.XXXXXX", url[64], log[700], cfgpath[600], env_db[600];
	const char *argv[] = {ts_bin("billingd"), "-c", cfgpath, NULL};
	const char *env[] = {env_db, NULL};
	int twice = 0, acked = 0;
	pid_t pid;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(cfgpath, sizeof(cfgpath), "%s/billing.yaml", dir);
	snprintf(log, sizeof(log), "%s/billingd.log", dir);
	use_db("events_kill");
	ts_sync_plans(db);
	receiver_reset();
	rcv.delay_ms = 20;
	receiver_start(0, 0, 0);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/hook", rcv.port);
	write_events_config(dir, url, SECRET);
	snprintf(env_db, sizeof(env_db), "DATABASE_URL=%s", db_url);
	emit_many(n, 10);
	pid = ts_spawn(argv, env, log);
	for (int i = 0; i < 400 && rcv.nreq < n / 4; i++)
		usleep(10 * 1000);
	ts_kill_pid(pid);
	assert_true(rcv.nreq < n); /* killed mid-way */
	pid = ts_spawn(argv, env, log);
	/* the dead process's leases run out (timeout_ms + 30 s) before its
	 * events in flight are sent again */
	assert_int_equal(
	    wait_for("SELECT count(*) FROM events WHERE status = 'delivered'", n, 60000), n);
	kill(pid, SIGTERM);
	assert_true(ts_wait_pid(pid, 10000) >= 0);
	receiver_stop();
	assert_int_equal(rcv.bad, 0);
	for (int i = 0; i < rcv.nreq && i < MAX_REQ; i++) {
		int first = 1, acks = 0;
		for (int j = 0; j < rcv.nreq && j < MAX_REQ; j++) {
			if (strcmp(rcv.ids[j], rcv.ids[i]) != 0)
				continue;
			first &= j >= i;
			acks += rcv.status[j] == 200;
		}
		if (!first)
			continue;
		acked++;
		twice += acks > 1;
		assert_in_range(acks, 1, 2);
	}
	assert_int_equal(acked, n);
	assert_in_range(twice, 0, 8); /* at most events.max_in_flight */
	snprintf(log, sizeof(log), "rm -rf '%s'", dir);
	assert_int_equal(system(log), 0);
	PQfinish(db);
}

/* ---- a simulated year with gateway faults and kill -9s ---- */

/* first[k]: request k is the first to carry its event id. */
static void mark_firsts(char *first)
{
	for (int k = 0; k < rcv.nreq; k++) {
		first[k] = 1;
		for (int j = 0; j < k && first[k]; j++)
			first[k] = strcmp(rcv.ids[j], rcv.ids[k]) != 0;
	}
}

/* Each week of 2026 a billingd on that week's clock, killed -9 a moment
 * after it starts, over a gateway failing 5 % of calls each way; then one
 * at the year's end until everything is charged and delivered. Judged at
 * the receiver against the gateway's ledger: exactly one charge.succeeded
 * per order the gateway took, every event received, and no event delivered
 * more often than the kills explain (the receiver acknowledges every
 * request). */
static void test_year_with_kills(void **state)
{
	static const char *const kinds[] = {"drop_before", "drop_after", "hang_after", "http5xx",
	                                    "http429",     "garbage",    "busy"};
	const int ncust = 24, max_in_flight = 8;
	const long jan1 = 1767243600L; /* 2026-01-01T00:00:00-05:00 */
	const long end = jan1 + 365 * DAY;
	char dir[] = "/tmp/test_events.XXXXXX", url[64], log[700], cfgpath[600], env_db[600];
	char now_arg[32], json[256], err[512], done_sql[512], id[16];
	const char *argv[] = {ts_bin("billingd"), "-c", cfgpath, "--now", now_arg, NULL};
	const char *env[] = {env_db, NULL};
	unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
	struct ts_fakegw fake;
	struct gw_client *gw;
	cJSON *ledger, *o;
	static char first[MAX_REQ];
	int kills = 0, cut = 0, paid = 0, firsts = 0, twice = 0;
	char owner[32];
	long events, t0 = ts_ms_now();
	pid_t pid;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(cfgpath, sizeof(cfgpath), "%s/billing.yaml", dir);
	snprintf(log, sizeof(log), "%s/billingd.log", dir);
	ts_fakegw_start(&fake, NULL);
	use_db("events_year");
	ts_cfg(&cfg, db_url, &fake);
	gw = gw_client_new(&cfg.gateway, err, sizeof(err));
	assert_non_null(gw);
	ts_sync_plans(db);
	for (int i = 0; i < ncust; i++) {
		snprintf(id, sizeof(id), "y%02d", i);
		ts_enrol(db, gw, id, NULL);
		ts_subscribe(db, id, i % 2 ? "weekly" : "monthly", jan1 + i * 5 * 3600L);
	}
	gw_client_free(gw);
	print_message("# events_year: seed %u\n", seed);
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		snprintf(json, sizeof(json),
		         "{\"endpoint\":\"*\",\"kind\":\"%s\",\"rate\":0.05,\"ms\":%d}", kinds[i],
		         strcmp(kinds[i], "hang_after") == 0 ? 600 : 20);
		assert_int_equal(ts_fakegw_post(&fake, "faults", json, NULL), 200);
	}
	receiver_reset();
	rcv.delay_ms = 20; /* deliveries in flight when a kill lands */
	receiver_start(0, 0, 0);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/hook", rcv.port);
	write_config_with(dir, url, SECRET, &fake,
	                  "gateway:\n  timeout_ms: 1000\n  max_in_flight: 4\n"
	                  "billing:\n  lease_seconds: 6\n  poll_interval_ms: 100\n");
	snprintf(env_db, sizeof(env_db), "DATABASE_URL=%s", db_url);
	for (long t = jan1; t < end; t += 7 * DAY) {
		char started[48];
		time_t tt = (time_t)t;
		struct tm tm;

		strftime(now_arg, sizeof(now_arg), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&tt, &tm));
		pid = ts_spawn(argv, env, log);
		/* counted from its start line (a slow start must not spend the run) */
		snprintf(started, sizeof(started), ":%d once=false", (int)pid);
		ts_wait_log(log, started, 20000);
		ts_sleep_ms(100 + (long)(rand_r(&seed) % 300));
		ts_kill_pid(pid);
		kills++;
		snprintf(owner, sizeof(owner), "%%:%d", (int)pid);
		cut += num(db,
		           "SELECT (SELECT count(*) FROM charges WHERE state = 'pending'"
		           "          AND lease_owner LIKE $1)"
		           "     + (SELECT count(*) FROM events WHERE status = 'pending'"
		           "          AND lease_owner LIKE $1)",
		           owner) > 0;
	}
	/* The year's end, a healthy gateway: the abandoned charges are resolved
	 * once their leases end, the dead daemons' deliveries once theirs do. */
	assert_int_equal(ts_fakegw_post(&fake, "faults", "{\"clear\":true}", NULL), 200);
	snprintf(now_arg, sizeof(now_arg), "2027-01-01T05:00:00Z");
	pid = ts_spawn(argv, env, log);
	snprintf(done_sql, sizeof(done_sql),
	         "SELECT (SELECT count(*) FROM charges WHERE state IN ('pending', 'unknown'))"
	         " + (SELECT count(*) FROM subscriptions WHERE next_charge_at <= to_timestamp(%ld)"
	         "     AND state IN ('trialing', 'active', 'past_due'))"
	         " + (SELECT count(*) FROM events WHERE status <> 'delivered')",
	         end);
	assert_int_equal(wait_for(done_sql, 0, 80000), 0);
	kill(pid, SIGTERM);
	assert_true(ts_wait_pid(pid, 10000) >= 0);
	receiver_stop();

	assert_int_equal(rcv.bad, 0);
	assert_true(rcv.nreq < MAX_REQ);
	events = num(db, "SELECT count(*) FROM events", NULL);
	mark_firsts(first);
	for (int k = 0; k < rcv.nreq; k++) {
		int n = 0;

		if (!first[k])
			continue;
		firsts++;
		for (int j = k; j < rcv.nreq; j++)
			n += strcmp(rcv.ids[j], rcv.ids[k]) == 0;
		/* once, or again when a kill cut the record of its delivery */
		assert_in_range(n, 1, 2);
		twice += n == 2;
	}
	assert_int_equal(firsts, events);
	assert_in_range(twice, 0, kills * max_in_flight);
	ledger = ts_fakegw_ledger(&fake);
	cJSON_ArrayForEach(o, cJSON_GetObjectItem(ledger, "orders"))
	{
		const char *m = cJSON_GetStringValue(cJSON_GetObjectItem(o, "mchOrderNo"));
		int n = 0;

		if (strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(o, "payType")), "pay") != 0)
			continue;
		paid++;
		for (int k = 0; k < rcv.nreq; k++)
			n += first[k] && strcmp(rcv.type[k], "charge.succeeded") == 0 &&
			     strcmp(rcv.order[k], m) == 0;
		if (n != 1)
			fail_msg("gateway order %s: %d charge.succeeded events received", m, n);
	}
	cJSON_Delete(ledger);
	/* and none for an order the gateway does not have */
	for (int k = 0; k < rcv.nreq; k++)
		paid -= first[k] && strcmp(rcv.type[k], "charge.succeeded") == 0;
	assert_int_equal(paid, 0);
	/* the kills did land while charging or delivering */
	assert_true(cut >= kills / 4);
	print_message("# events_year: %d kills (%d while charging or delivering), %ld events, %d "
	              "delivered twice, %.0f s\n",
	              kills, cut, events, twice, (double)(ts_ms_now() - t0) / 1000);
	ts_fakegw_stop(&fake);
	snprintf(log, sizeof(log), "rm -rf '%s'", dir);
	assert_int_equal(system(log), 0);
	PQfinish(db);
}

/* ---- the README's verification snippets ---- */

/* The fenced block after "<!-- verify:LANG -->" in README.md (malloc'd). */
static char *snippet(const char *lang)
{
	char *readme = ts_read_file("README.md"), marker[64], *s, *end, *out;

	snprintf(marker, sizeof(marker), "<!-- verify:%s -->\n```%s\n", lang, lang);
	s = strstr(readme, marker);
	assert_non_null(s);
	s += strlen(marker);
	end = strstr(s, "\n```");
	assert_non_null(end);
	out = strndup(s, (size_t)(end - s + 1));
	free(readme);
	return out;
}

/* Runs the README's snippet in lang on (sig, body): 1 accepted, 0 rejected. */
static int readme_accepts(const char *lang, const char *dir, const char *sig, const char *body)
{
	char path[256], cmd[1024], *code = snippet(lang);
	FILE *f;
	int rc;

	snprintf(path, sizeof(path), "%s/body.json", dir);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(body, f);
	fclose(f);
	snprintf(path, sizeof(path), "%s/verify.%s", dir, lang);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(code, f);
	if (strcmp(lang, "python") == 0)
		fputs("import os, sys\n"
		      "sys.exit(0 if verify(os.environ['SECRET'].encode(), os.environ['SIG'],"
		      " open('body.json', 'rb').read()) else 1)\n",
		      f);
	fclose(f);
	free(code);
	setenv("SECRET", SECRET, 1);
	setenv("SIG", sig, 1);
	snprintf(cmd, sizeof(cmd), "cd '%s' && %s verify.%s >/dev/null 2>&1", dir,
	         strcmp(lang, "python") == 0 ? "python3" : "sh", lang);
	rc = system(cmd);
	return WIFEXITED(rc) && WEXITSTATUS(rc) == 0;
}

static void test_readme_snippets(void **state)
{
	const char *langs[] = {"python", "sh"};
	char dir[] = "/tmp/test_events.XXXXXX", sig[160], forged[160], stale[160], hex[65], *msg;
	struct events *e;
	long t = (long)time(NULL) - 3600;
	size_t n;

	(void)state;
	assert_non_null(mkdtemp(dir));
	use_db("events_readme");
	receiver_reset();
	receiver_start(0, 0, 0);
	emit_many(1, 1);
	e = deliver_to(rcv.port, 2000, "1");
	assert_int_equal(
	    wait_for("SELECT count(*) FROM events WHERE status = 'delivered'", 1, 20000), 1);
	events_stop(e);
	receiver_stop();
	snprintf(sig, sizeof(sig), "%s", rcv.last_sig);
	/* forged: one digit of the MAC changed */
	snprintf(forged, sizeof(forged), "%s", sig);
	n = strlen(forged);
	forged[n - 1] = forged[n - 1] == '0' ? '1' : '0';
	/* stale: a true MAC, an hour old */
	n = strlen(rcv.last_body);
	msg = malloc(n + 32);
	assert_non_null(msg);
	n = (size_t)snprintf(msg, 32, "%ld.", t) + n;
	memcpy(msg + strlen(msg), rcv.last_body, strlen(rcv.last_body));
	hmac_hex(SECRET, msg, n, hex);
	free(msg);
	snprintf(stale, sizeof(stale), "t=%ld,v1=%s", t, hex);
	for (int i = 0; i < 2; i++) {
		assert_true(readme_accepts(langs[i], dir, sig, rcv.last_body));
		assert_false(readme_accepts(langs[i], dir, forged, rcv.last_body));
		assert_false(readme_accepts(langs[i], dir, stale, rcv.last_body));
		assert_false(readme_accepts(langs[i], dir, sig, "{\"id\":\"evt_forged\"}"));
	}
	snprintf(hex, sizeof(hex), "rm -rf '%s'", dir);
	assert_int_equal(system(hex), 0);
	PQfinish(db);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_no_event_without_the_clock),
	    cmocka_unit_test(test_body_format_and_seq),
	    cmocka_unit_test(test_lifecycle_types),
	    cmocka_unit_test(test_time_based_once),
	    cmocka_unit_test(test_faulty_receiver_gets_everything),
	    cmocka_unit_test(test_receiver_down_then_back),
	    cmocka_unit_test(test_failed_then_replayed),
	    cmocka_unit_test(test_readme_snippets),
	    cmocka_unit_test(test_sighup_reloads_events),
	    cmocka_unit_test(test_kill9_while_delivering),
	    cmocka_unit_test(test_year_with_kills),
	};

	pthread_mutex_init(&rcv.mu, NULL);
	return cmocka_run_group_tests_name("tests", tests, NULL, NULL);
}
