/* owner_lock.h: this process's owner lock (docs/design.md, "The owner
 * lock"): a session advisory lock on the name that leases give it, held on a
 * connection of its own for the process's whole life. Held, it says the
 * process is alive and reaches the database; free, a pending charge leased
 * to that name whose answer can no longer be in flight is resolved at once
 * rather than at its lease's end (charges_claim_unresolved_send). */
#ifndef OWNER_LOCK_H
#define OWNER_LOCK_H

/* SQL: true when the owner lock of the lease owner named by the text
 * expression owner is not held by any session. The lock's key, spelled here
 * only: class 72838 (the order numbers' locks are 72836, the events' 72837),
 * the name's hashtext. Two names of one hash share a lock: a dead owner then
 * looks alive and its charges wait for their leases, which is safe. */
#define OWNER_LOCK_CLASS "72838"
#define OWNER_LOCK_FREE(owner)                                                                     \
	"hashtext(" owner ")::oid NOT IN (SELECT objid FROM pg_locks"                              \
	" WHERE locktype = 'advisory' AND classid = " OWNER_LOCK_CLASS " AND objsubid = 2"         \
	" AND granted AND database = (SELECT oid FROM pg_database"                                 \
	"                              WHERE datname = current_database()))"

struct owner_lock;

/* Connects to url and takes owner's lock (a failure is logged, and taken
 * again by owner_lock_held). NULL only when out of memory. */
struct owner_lock *owner_lock_new(const char *url, const char *owner);
/* Releases the lock (closes its connection); l may be NULL. */
void owner_lock_free(struct owner_lock *l);

/* 1 while the lock is held. A loss (the server closed the connection, or
 * said it would) is seen without a round trip, so that this can be asked
 * before every claim; after one, the lock is taken again, at most once a
 * second, on a new connection. Transitions are logged. */
int owner_lock_held(struct owner_lock *l);

/* Takes the lock again on a new connection, now: after the claims'
 * connection was made again, which may have reached another server (a
 * failover), where the lock must be held for the others to see it. */
void owner_lock_renew(struct owner_lock *l);

#endif
