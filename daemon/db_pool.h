/* db_pool.h: database connections shared by the threads of a server. */
#ifndef DB_POOL_H
#define DB_POOL_H

#include "db.h"

/* A fixed set of connections shared by threads, each opened on first use
 * and reopened when found down (so that its owner starts while the
 * database is down). */
struct db_pool;
/* NULL when out of memory. */
struct db_pool *db_pool_new(const char *url, const char *actor, int size);
void db_pool_free(struct db_pool *p);
typedef int (*db_fn)(PGconn *c, void *arg, char *err, size_t errlen);
/* Runs fn (which returns < 0 on a database error) on a free connection,
 * waiting for one; when fn fails because the connection went down (the
 * database restarted), runs it once more on a new one: fn must be
 * idempotent. Returns fn's result, or -1 with err when no connection. */
int db_pool_run(struct db_pool *p, db_fn fn, void *arg, char *err, size_t errlen);

#endif
