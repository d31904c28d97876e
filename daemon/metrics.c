/* metrics.c: billingd's Prometheus metrics.
 *
 * The process's counters are C11 atomics, so that updating them never
 * blocks a charge. The database-wide gauges are computed at scrape time,
 * and only by the daemon holding the leader lock, so that a sum() over
 * daemons counts each row once. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "billing.h"
#include "customers.h"
#include "events.h"
#include "db.h"
#include "buf.h"
#include "gateway.h"
#include "metrics.h"
#include "wave.h"

#define EXPIRING_SOON_DAYS 30
/* pg_advisory_lock key of the metrics leader: "billmetr" */
#define LEADER_KEY "7082198004906570866"

/* The log's outcome names (billing_result_names); "unknown" is not final. */
static const char *const outcomes[] = {"success", "declined", "busy", "absent", "unknown"};
#define NOUTCOMES (sizeof(outcomes) / sizeof(outcomes[0]))
#define NFINAL    (NOUTCOMES - 1)
static atomic_ullong charges[NFINAL], queries[NOUTCOMES];
static const char *const reasons[] = {"auth", "busy"};
#define NREASONS (sizeof(reasons) / sizeof(reasons[0]))
static atomic_ullong gateway_errors[NREASONS];
static atomic_ullong charged_cents;
static atomic_llong last_pass_end, last_pass_ns;

/* Gateway latencies: from a fast local round trip to the longest timeout. */
static const double bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
#define NBOUNDS (sizeof(bounds) / sizeof(bounds[0]))
static atomic_ullong buckets[NBOUNDS + 1]; /* per bucket (not cumulative); last: +Inf */
static atomic_ullong sum_ns;
static atomic_int in_flight;
static atomic_int unrecorded;

static const char *const delivery_results[] = {"delivered", "rejected", "error"};
#define NRESULTS (sizeof(delivery_results) / sizeof(delivery_results[0]))
static atomic_ullong deliveries[NRESULTS];

/* Adds one to counts[i] where names[i] is name. */
static void count_name(atomic_ullong *counts, const char *const *names, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(name, names[i]) == 0)
			atomic_fetch_add(&counts[i], 1);
}

void metrics_charge(const char *outcome)
{
	count_name(charges, outcomes, NFINAL, outcome);
}

void metrics_query(const char *outcome)
{
	count_name(queries, outcomes, NOUTCOMES, outcome);
}

void metrics_gateway_error(const char *reason)
{
	count_name(gateway_errors, reasons, NREASONS, reason);
}

void metrics_charged(int64_t cents)
{
	if (cents > 0)
		atomic_fetch_add(&charged_cents, (unsigned long long)cents);
}

void metrics_pass(int64_t end, double seconds)
{
	atomic_store(&last_pass_end, (long long)end);
	atomic_store(&last_pass_ns, (long long)(seconds * 1e9));
}

void metrics_gateway_observe(double seconds)
{
	size_t i;

	if (!(seconds >= 0))
		seconds = 0;
	for (i = 0; i < NBOUNDS && seconds > bounds[i]; i++)
		;
	atomic_fetch_add(&buckets[i], 1);
	atomic_fetch_add(&sum_ns, (unsigned long long)(seconds * 1e9));
}

void metrics_event_delivery(const char *result)
{
	count_name(deliveries, delivery_results, NRESULTS, result);
}

void metrics_in_flight(int n)
{
	atomic_store(&in_flight, n);
}

void metrics_unrecorded(int n)
{
	atomic_store(&unrecorded, n);
}

static void family(struct buf *t, const char *name, const char *type, const char *help)
{
	buf_printf(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One labelled family of counters. */
static void counters(struct buf *t, const char *name, const char *help, const char *label,
                     const char *const *names, atomic_ullong *counts, size_t n)
{
	family(t, name, "counter", help);
	for (size_t i = 0; i < n; i++)
		buf_printf(t, "%s{%s=\"%s\"} %llu\n", name, label, names[i],
		           atomic_load(&counts[i]));
}

/* 1 with the gateway's words while a wave stops charging (wave.h). */
static void render_wave(struct buf *t)
{
	char msg[256];

	wave_current(msg, sizeof(msg));
	family(
	    t, "billing_gateway_wave", "gauge",
	    "1 while the same unfamiliar FAIL for many customers stops charging, labelled by it.");
	if (!msg[0]) {
		buf_printf(t, "billing_gateway_wave 0\n");
		return;
	}
	buf_printf(t, "billing_gateway_wave{ret_msg=\"");
	for (const char *c = msg; *c; c++)
		buf_printf(t, *c == '"' || *c == '\\' ? "\\%c" : "%c", *c);
	buf_printf(t, "\"} 1\n");
}

static void render_process(struct buf *t)
{
	unsigned long long cum = 0;
	size_t i;

	render_wave(t);
	family(t, "billing_build_info", "gauge", "The running build: 1, labelled by version.");
	buf_printf(t, "billing_build_info{version=\"%s\"} 1\n", BILLING_VERSION);
	counters(t, "billing_charges_total",
	         "Charge attempts by final outcome (one each, however many queries it took).",
	         "outcome", outcomes, charges, NFINAL);
	counters(t, "billing_charge_queries_total",
	         "Queries (cc_query) of charges whose outcome was unknown, by what they found.",
	         "outcome", outcomes, queries, NOUTCOMES);
	counters(t, "billing_gateway_errors_total",
	         "Requests the gateway did not process: our key or mch_id refused, or busy.",
	         "reason", reasons, gateway_errors, NREASONS);
	family(t, "billing_charged_cents_total", "counter",
	       "Money charged by this process, in cents.");
	buf_printf(t, "billing_charged_cents_total{currency=\"%s\"} %llu\n", GW_CURRENCY,
	           atomic_load(&charged_cents));
	family(t, "billing_last_pass_timestamp_seconds", "gauge",
	       "When the last pass ended (unix time; 0: none yet).");
	buf_printf(t, "billing_last_pass_timestamp_seconds %lld\n", atomic_load(&last_pass_end));
	family(t, "billing_pass_duration_seconds", "gauge", "How long the last pass took.");
	buf_printf(t, "billing_pass_duration_seconds %.9f\n",
	           (double)atomic_load(&last_pass_ns) / 1e9);
	family(t, "billing_gateway_request_duration_seconds", "histogram",
	       "Duration of requests to the gateway.");
	for (i = 0; i <= NBOUNDS; i++) {
		cum += atomic_load(&buckets[i]);
		if (i < NBOUNDS)
			buf_printf(
			    t, "billing_gateway_request_duration_seconds_bucket{le=\"%g\"} %llu\n",
			    bounds[i], cum);
	}
	/* +Inf and _count from the same snapshot, so that they always agree. */
	buf_printf(t, "billing_gateway_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n", cum);
	buf_printf(t, "billing_gateway_request_duration_seconds_sum %.9f\n",
	           (double)atomic_load(&sum_ns) / 1e9);
	buf_printf(t, "billing_gateway_request_duration_seconds_count %llu\n", cum);
	family(t, "billing_gateway_requests_in_flight", "gauge",
	       "Requests to the gateway in flight now.");
	buf_printf(t, "billing_gateway_requests_in_flight %d\n", atomic_load(&in_flight));
	family(t, "billing_outcomes_unrecorded", "gauge",
	       "Gateway answers not yet written to the database; near two billing.batch_size "
	       "the database is not keeping up and charging slows down.");
	buf_printf(t, "billing_outcomes_unrecorded %d\n", atomic_load(&unrecorded));
	family(t, "billing_event_deliveries_total", "counter",
	       "Event delivery attempts by this process, by result.");
	for (size_t k = 0; k < NRESULTS; k++)
		buf_printf(t, "billing_event_deliveries_total{result=\"%s\"} %llu\n",
		           delivery_results[k], atomic_load(&deliveries[k]));
}

int metrics_lead(PGconn *c, char *err, size_t errlen)
{
	/* held already, or taken now (CASE: in that order) */
	PGresult *r =
	    db_query(c,
	             "SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_locks WHERE "
	             "locktype = 'advisory' AND pid = pg_backend_pid() AND granted AND "
	             "objsubid = 1 AND (classid::bigint << 32 | objid::bigint) = " LEADER_KEY
	             ") THEN true ELSE pg_try_advisory_lock(" LEADER_KEY ") END",
	             0, NULL, err, errlen);
	int held;

	if (!r)
		return -1;
	held = strcmp(db_str(r, 0, 0), "t") == 0;
	PQclear(r);
	return held;
}

/* Subscriptions by state, and those due now among them. */
static int subscription_counts(PGconn *c, int64_t now, long by_state[BILLING_NSTATES], long *due,
                               char *err, size_t errlen)
{
	PGresult *r = db_get(c, err, errlen,
	                     "SELECT state, count(*), count(*) FILTER (WHERE next_charge_at <= "
	                     "to_timestamp($1) AND state IN ('trialing', 'active', 'past_due')) "
	                     "FROM subscriptions GROUP BY state",
	                     DB_I(now));

	if (!r)
		return -1;
	*due = 0;
	for (int i = 0; i < PQntuples(r); i++) {
		int s = billing_state_parse(db_str(r, i, 0));
		if (s >= 0)
			by_state[s] = (long)db_i64(r, i, 1);
		*due += (long)db_i64(r, i, 2);
	}
	PQclear(r);
	return 0;
}

static int render_database(struct buf *t, PGconn *c, int64_t now, char *err, size_t errlen)
{
	struct customers_counts cc;
	long by_state[BILLING_NSTATES] = {0}, due, unknown, ev_pending, ev_failed;
	/* unknown, or pending with its lease run out (leases: the database's
	 * clock); those in flight now are not. Only subscription charges are
	 * leased or unknown (the open ones are in charges_one_open). */
	PGresult *r =
	    db_query(c,
	             "SELECT (SELECT count(*) FROM charges WHERE subscription_id IS NOT NULL"
	             " AND (state = 'unknown' OR (state = 'pending'"
	             " AND lease_expires_at <= now()))), "
	             "(SELECT coalesce(sum(amount_cents), 0) FROM refunds WHERE "
	             "state = 'succeeded')",
	             0, NULL, err, errlen);
	long long refunded;
	int i;

	if (!r)
		return -1;
	unknown = (long)db_i64(r, 0, 0);
	refunded = (long long)db_i64(r, 0, 1);
	PQclear(r);
	if (subscription_counts(c, now, by_state, &due, err, errlen) < 0 ||
	    customers_count(c, EXPIRING_SOON_DAYS, now, &cc, err, errlen) < 0 ||
	    events_count(c, &ev_pending, &ev_failed, err, errlen) < 0)
		return -1;
	family(t, "billing_subscriptions", "gauge", "Subscriptions by state.");
	for (i = 0; i < BILLING_NSTATES; i++)
		buf_printf(t, "billing_subscriptions{state=\"%s\"} %ld\n", billing_state_names[i],
		           by_state[i]);
	family(t, "billing_due_backlog", "gauge", "Subscriptions due for a charge now.");
	buf_printf(t, "billing_due_backlog %ld\n", due);
	family(t, "billing_unknown_charges", "gauge",
	       "Charges whose outcome is unknown, or pending with their lease run out: awaiting "
	       "cc_query.");
	buf_printf(t, "billing_unknown_charges %ld\n", unknown);
	/* Refunds are made by billctl, so they are counted from the ledger:
	 * a succeeded refund is final, so the sum only grows. */
	family(t, "billing_refunded_cents_total", "counter",
	       "Money refunded (succeeded refunds and voids in the ledger), in cents.");
	buf_printf(t, "billing_refunded_cents_total{currency=\"%s\"} %lld\n", GW_CURRENCY,
	           refunded);
	family(t, "billing_customers", "gauge", "Customers by enrolment state.");
	for (i = 0; i < CUSTOMERS_NSTATES; i++)
		buf_printf(t, "billing_customers{state=\"%s\"} %ld\n", customers_states[i],
		           cc.state[i]);
	family(t, "billing_cards_expiring_soon", "gauge",
	       "Bound cards expired or expiring within 30 days.");
	buf_printf(t, "billing_cards_expiring_soon %ld\n", cc.expiring);
	family(t, "billing_events_pending", "gauge",
	       "Events written and not yet delivered (their retries included).");
	buf_printf(t, "billing_events_pending %ld\n", ev_pending);
	family(t, "billing_events_failed", "gauge",
	       "Events whose retries ran out: kept, and sent again by billctl events replay.");
	buf_printf(t, "billing_events_failed %ld\n", ev_failed);
	return 0;
}

int metrics_render(PGconn *c, int leader, int64_t now, char **out, char *err, size_t errlen)
{
	struct buf t = {0};

	render_process(&t);
	if (c && leader && render_database(&t, c, now, err, errlen) < 0) {
		buf_free(&t);
		return -1;
	}
	family(&t, "billing_leader", "gauge",
	       "1 in the one daemon that exports the database-wide gauges (billing_subscriptions, "
	       "billing_due_backlog, billing_unknown_charges, billing_customers, "
	       "billing_cards_expiring_soon, billing_refunded_cents_total, billing_events_pending, "
	       "billing_events_failed).");
	buf_printf(&t, "billing_leader %d\n", c && leader ? 1 : 0);
	family(&t, "billing_database_up", "gauge", "1 when the database answered this scrape.");
	buf_printf(&t, "billing_database_up %d\n", c ? 1 : 0);
	if (t.nomem) {
		buf_free(&t);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	*out = t.p;
	return 0;
}
