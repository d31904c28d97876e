/* metrics.h: billingd's Prometheus metrics: counters and a histogram the
 * scheduler updates (lock-free, from any thread) and gauges read from the
 * database when /metrics is scraped. */
#ifndef METRICS_H
#define METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <libpq-fe.h>

/* One charge outcome: "success", "fail" or "unknown" (others are ignored). */
void metrics_charge(const char *outcome);
/* One gateway request's duration. */
void metrics_gateway_observe(double seconds);
/* One event delivery attempt: "delivered" (a 2xx), "rejected" (another
 * HTTP status) or "error" (no answer: timeout, connection). */
void metrics_event_delivery(const char *result);
/* Gateway requests in flight right now. */
void metrics_in_flight(int n);

/* Renders every family in the Prometheus text format 0.0.4 into *out
 * (malloc'd, caller frees). With c the database gauges are computed as of
 * now and billing_database_up is 1; with c NULL they are left out and
 * billing_database_up is 0. 0 / -1 with err (database error: *out unset). */
int metrics_render(PGconn *c, int64_t now, char **out, char *err, size_t errlen);

#endif
