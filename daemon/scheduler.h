/* scheduler.h: the charge protocol (docs/design.md, "The charge protocol"): claim
 * what is due, commit the intent, send, record the outcome with the
 * subscription's advance or dunning step; resolve unknowns with cc_query. */
#ifndef SCHEDULER_H
#define SCHEDULER_H

#include <stddef.h>
#include <stdint.h>
#include <libpq-fe.h>

#include "config.h"
#include "gateway.h"

struct sched;
struct failover_recent;

struct sched_stats {
	long claimed;   /* charge attempts sent */
	long succeeded; /* charges proven paid (sent now, or resolved) */
	long declined;  /* definite failures that stepped dunning */
	long unknown;   /* outcomes left unknown (resolved in a later pass) */
	long absent;    /* unknowns proven absent at the gateway: retried */
	long bindings;  /* enrolment and binding checks made */
	long auth;      /* answers refusing our key or mch_id */
	int swept;      /* everything due was claimed (the pass was not cut short) */
};

/* Borrows cfg, db and gw; owner names this process in leases and logs. */
struct sched *sched_new(const struct cfg *cfg, PGconn *db, struct gw_client *gw, const char *owner);
void sched_free(struct sched *s);
/* After a reconnect. */
void sched_set_db(struct sched *s, PGconn *db);
/* Charges are claimed only while lock (borrowed; owner_lock.h) is held:
 * billingd's; without one (billctl), a process's charges look abandoned to
 * the daemons once no answer to them can be in flight. */
struct owner_lock;
void sched_set_owner_lock(struct sched *s, struct owner_lock *lock);
/* Failover (failover.h): with on, each charge is asked with cc_query
 * before it is sent, and sent only when proven absent. */
void sched_set_probing(struct sched *s, int on);
/* After a reconnect: the charges this process sent in the last lease and
 * the server does not have are inserted as unknown, dated now. How many,
 * or -1 with err. */
int sched_restore_sent(struct sched *s, int64_t now, char *err, size_t errlen);
/* pump_take_sent and pump_give_sent, for a reload: the old scheduler's
 * memory of its sends goes to the new one. */
struct failover_recent *sched_take_sent(struct sched *s);
void sched_give_sent(struct sched *s, struct failover_recent *r);
/* Stop claiming new work; requests in flight are finished (or left for
 * reconciliation if the process dies). Safe from a signal handler. */
void sched_stop(struct sched *s);

/* One pass at time now: period boundaries (cancel at period end, plan
 * changes), unknown and abandoned charges resolved, unknown refunds and
 * voids settled, every enrolment and binding check due made, everything due
 * charged. 0, or -1 with err (database trouble). */
int sched_pass(struct sched *s, int64_t now, struct sched_stats *st, char *err, size_t errlen);

/* Only the resolving part of a pass: unknown and abandoned charges queried
 * (each once) and recorded with their subscription's step. Used by
 * billctl reconcile. 0, or -1 with err. */
int sched_resolve(struct sched *s, int64_t now, struct sched_stats *st, char *err, size_t errlen);

/* billctl charge: charges what the subscription owes (a due or past_due
 * period; with end_trial, a trial ended now) through the same protocol. Returns GW_INVALID with err
 * when nothing was claimed (so nothing was sent: nothing owed (err says when the next charge is
 * due), or a database error before the claim). Once the attempt is claimed it returns its recorded
 * outcome: GW_SUCCESS, GW_FAIL (declined), or GW_UNKNOWN, also when an error stopped the protocol
 * after the claim (the request may be on the wire: a later pass resolves it with cc_query); err
 * then says why, and mch_order_no is the attempt's when known. */
int sched_charge_now(struct sched *s, int64_t subscription_id, int64_t now, int end_trial,
                     char *mch_order_no, size_t len, char *err, size_t errlen);

#endif
