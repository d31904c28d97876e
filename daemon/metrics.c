/* metrics.c: billingd's Prometheus metrics.
 *
 * The scheduler's counters are C11 atomics, so that updating them never
 * blocks a charge; the database gauges are computed at scrape time, so that
 * they are right whichever billingd process did the work. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "customers.h"
#include "events.h"
#include "db.h"
#include "buf.h"
#include "metrics.h"

#define EXPIRING_SOON_DAYS 30

static const char *const outcomes[] = {"success", "fail", "unknown"};
#define NOUTCOMES (sizeof(outcomes) / sizeof(outcomes[0]))
static atomic_ullong charges[NOUTCOMES];

/* Gateway latencies: from a fast local round trip to the longest timeout. */
static const double bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
#define NBOUNDS (sizeof(bounds) / sizeof(bounds[0]))
static atomic_ullong buckets[NBOUNDS + 1]; /* per bucket (not cumulative); last: +Inf */
static atomic_ullong sum_ns;
static atomic_int in_flight;

static const char *const delivery_results[] = {"delivered", "rejected", "error"};
#define NRESULTS (sizeof(delivery_results) / sizeof(delivery_results[0]))
static atomic_ullong deliveries[NRESULTS];

void metrics_charge(const char *outcome)
{
	size_t i;

	for (i = 0; i < NOUTCOMES; i++)
		if (strcmp(outcome, outcomes[i]) == 0)
			atomic_fetch_add(&charges[i], 1);
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
	for (size_t i = 0; i < NRESULTS; i++)
		if (strcmp(result, delivery_results[i]) == 0)
			atomic_fetch_add(&deliveries[i], 1);
}

void metrics_in_flight(int n)
{
	atomic_store(&in_flight, n);
}

static void family(struct buf *t, const char *name, const char *type, const char *help)
{
	buf_printf(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void render_process(struct buf *t)
{
	unsigned long long cum = 0;
	size_t i;

	family(t, "billing_charges_total", "counter",
	       "Charge attempts completed by the scheduler, by outcome.");
	for (i = 0; i < NOUTCOMES; i++)
		buf_printf(t, "billing_charges_total{outcome=\"%s\"} %llu\n", outcomes[i],
		           atomic_load(&charges[i]));
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
	family(t, "billing_event_deliveries_total", "counter",
	       "Event delivery attempts by this process, by result.");
	for (size_t k = 0; k < NRESULTS; k++)
		buf_printf(t, "billing_event_deliveries_total{result=\"%s\"} %llu\n",
		           delivery_results[k], atomic_load(&deliveries[k]));
}

static long count(PGconn *c, const char *sql, int64_t now, char *err, size_t errlen)
{
	PGresult *r = db_get(c, err, errlen, sql, DB_I(now));
	long n;

	if (!r)
		return -1;
	n = (long)db_i64(r, 0, 0);
	PQclear(r);
	return n;
}

static int render_database(struct buf *t, PGconn *c, int64_t now, char *err, size_t errlen)
{
	struct customers_counts cc;
	long due, unknown, ev_pending, ev_failed;
	int i;

	due = count(c,
	            "SELECT count(*) FROM subscriptions WHERE next_charge_at <= to_timestamp($1) "
	            "AND state IN ('trialing', 'active', 'past_due')",
	            now, err, errlen);
	unknown = due < 0
	              ? -1
	              : count(c,
	                      "SELECT count(*) FROM charges WHERE state IN ('pending', 'unknown') "
	                      "AND (lease_expires_at IS NULL OR lease_expires_at <= "
	                      "to_timestamp($1))",
	                      now, err, errlen);
	if (unknown < 0 || customers_count(c, EXPIRING_SOON_DAYS, now, &cc, err, errlen) < 0 ||
	    events_count(c, &ev_pending, &ev_failed, err, errlen) < 0)
		return -1;
	family(t, "billing_due_backlog", "gauge", "Subscriptions due for a charge now.");
	buf_printf(t, "billing_due_backlog %ld\n", due);
	family(t, "billing_unknown_charges", "gauge",
	       "Charges pending or unknown whose lease expired, awaiting reconciliation.");
	buf_printf(t, "billing_unknown_charges %ld\n", unknown);
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

int metrics_render(PGconn *c, int64_t now, char **out, char *err, size_t errlen)
{
	struct buf t = {0};

	render_process(&t);
	if (c && render_database(&t, c, now, err, errlen) < 0) {
		buf_free(&t);
		return -1;
	}
	family(&t, "billing_database_up", "gauge",
	       "1 when the database gauges above could be computed.");
	buf_printf(&t, "billing_database_up %d\n", c ? 1 : 0);
	if (t.nomem) {
		buf_free(&t);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	*out = t.p;
	return 0;
}
