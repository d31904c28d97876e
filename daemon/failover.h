/* failover.h: surviving a promotion or a restore that lost committed
 * intents (docs/design.md, "Failover"). Two defences: the order numbers
 * this process sent recently are kept in memory and re-inserted as unknown
 * after a reconnect when the server does not have them; and a server whose
 * history differs from the one the ledger recorded (cluster_identity) is
 * probed: each order number is asked with cc_query before it is sent. */
#ifndef FAILOVER_H
#define FAILOVER_H

#include <stddef.h>
#include <stdint.h>
#include <libpq-fe.h>

#include "db.h"

/* A probe (and billctl reconcile) asks for this many attempt numbers past
 * the one derived: intents lost together can be a chain of attempts of one
 * period (unknown, proven absent, the next sent). */
#define FAILOVER_AHEAD 3

/* Compares the server's identity (filled into id) with the recorded one
 * (recording it when there is none). 1 when they differ (probe before
 * sending), 0 when the same, -1 with err. */
int failover_check(PGconn *c, struct db_identity *id, char *err, size_t errlen);

/* Records id as the ledger's server history once every subscription due
 * before it changed has been probed (the caller's pass claimed all that was
 * due) and no subscription charge opened before failover_check saw the
 * change is still open. 1 when recorded (probing may stop), 0 when not yet,
 * -1 with err. */
int failover_settle(PGconn *c, const struct db_identity *id, char *err, size_t errlen);

/* The subscription charges this process sent in the last `seconds`. */
struct failover_recent;
/* NULL when out of memory. */
struct failover_recent *failover_recent_new(int seconds);
void failover_recent_free(struct failover_recent *r);
/* A charge about to be sent (aborts when out of memory: a number sent and
 * not remembered could be lost by a failover). */
void failover_recent_add(struct failover_recent *r, const char *mch_order_no, int64_t sub,
                         const char *customer_id, int64_t amount, int64_t now);
/* After a reconnect: inserts as unknown (to be resolved with cc_query
 * before anything new is sent for the subscription) every remembered
 * charge the server does not have. How many, or -1 with err. Each that
 * cannot be re-inserted (the subscription has another open charge) is
 * logged as an error. */
int failover_recent_restore(PGconn *c, struct failover_recent *r, char *err, size_t errlen);

/* A primary with standbys of which none is synchronous: 1 with one line in
 * warn; 0 when there are none, or a commit waits for one; -1 with err. */
int failover_replication_warning(PGconn *c, char *warn, size_t len, char *err, size_t errlen);

#endif
