/* metrics.h: billingd's Prometheus metrics: counters, gauges and a
 * histogram the process updates (lock-free, from any thread), and gauges
 * read from the database when /metrics is scraped by the leader. */
#ifndef METRICS_H
#define METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <libpq-fe.h>

/* One charge attempt's final outcome, named as in the log
 * (billing_result_names: "success", "declined", "busy", "absent"); others
 * are ignored. An attempt is counted once, however many queries it took. */
void metrics_charge(const char *outcome);
/* One cc_query of an unresolved charge and what it found (the same names,
 * and "unknown"). */
void metrics_query(const char *outcome);
/* Money charged, in cents of the gateway's currency. */
void metrics_charged(int64_t cents);
/* The gateway did not process a request: reason "auth" or "busy"
 * (gw_reason_name). */
void metrics_gateway_error(const char *reason);
/* One gateway request's duration. */
void metrics_gateway_observe(double seconds);
/* One event delivery attempt: "delivered" (a 2xx), "rejected" (another
 * HTTP status) or "error" (no answer: timeout, connection). */
void metrics_event_delivery(const char *result);
/* Gateway requests in flight right now. */
void metrics_in_flight(int n);
/* Gateway answers the recorder has not yet written to the database. */
void metrics_unrecorded(int n);
/* A pass ended at unix time end after seconds. */
void metrics_pass(int64_t end, double seconds);

/* Takes the metrics leader lock (a session advisory lock) on c if no
 * process holds it: 1 when c holds it, 0 when another does, -1 with err.
 * The lock lasts as long as c. */
int metrics_lead(PGconn *c, char *err, size_t errlen);

/* Renders every family in the Prometheus text format 0.0.4 into *out
 * (malloc'd, caller frees). With c (whose session holds the leader lock)
 * the database-wide gauges are computed as of now; without, they are left
 * out. billing_leader says which; billing_database_up whether c answered.
 * 0 / -1 with err (database error: *out unset). */
int metrics_render(PGconn *c, int leader, int64_t now, char **out, char *err, size_t errlen);

#endif
