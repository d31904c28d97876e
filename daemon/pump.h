/* pump.h: the scheduler's claim pump: keeps max_in_flight gateway requests
 * going while there is work, claiming it from the database as slots free
 * up, and hands every answer to the recorder thread (recorder.h). */
#ifndef PUMP_H
#define PUMP_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <libpq-fe.h>

#include "config.h"
#include "gateway.h"
#include "scheduler.h"

struct pump;

/* Borrows cfg and gw; owner names this process in leases and logs. */
struct pump *pump_new(const struct cfg *cfg, struct gw_client *gw, const char *owner);
void pump_free(struct pump *p); /* p not NULL */

/* What to claim: with cutoff, open outcomes whose lease ended before it
 * (for a cc_query); else charges due at now (only_sub: that subscription
 * alone). */
struct pump_work {
	int64_t now; /* the billing clock */
	const char *cutoff;
	int64_t only_sub;
};

/* Claims only while lock (borrowed; NULL: none) is held (owner_lock.h). */
struct owner_lock;
void pump_set_owner_lock(struct pump *p, struct owner_lock *lock);

/* Claims up to limit of what and queues it for sending (pump_run sends
 * it). Returns how many were claimed, or -1 with err (then nothing was
 * claimed). */
int pump_claim(struct pump *p, PGconn *db, const struct pump_work *what, int limit, char *err,
               size_t errlen);

/* Claims what (NULL: nothing new) and keeps sending while work is found and
 * *stop is 0, then finishes what is in flight and waits until the recorder
 * has written it. Returns how many were claimed, or -1 with err. */
int pump_run(struct pump *p, PGconn *db, const struct pump_work *what,
             const volatile sig_atomic_t *stop, struct sched_stats *st, char *err, size_t errlen);

/* Failover (failover.h): with on, every charge claimed is first asked with
 * cc_query, and sent only when proven absent. */
void pump_set_probing(struct pump *p, int on);
/* After a reconnect: the charges sent in the last lease that the server
 * lost go back as unknown. How many, or -1 with err. */
int pump_restore_sent(struct pump *p, PGconn *db, char *err, size_t errlen);
/* What p remembers having sent, taken from it (p must be freed next), and
 * given to another pump (which forgets its own; NULL: nothing given), so
 * that a reload does not forget the sends of the last lease. */
struct failover_recent *pump_take_sent(struct pump *p);
void pump_give_sent(struct pump *p, struct failover_recent *r);
/* 1 while the same unfamiliar FAIL answers every charge (wave.h): the
 * scheduler backs off. */
int pump_wave_on(const struct pump *p);

#endif
