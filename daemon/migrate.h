/* migrate.h: applies migrations/NNNN_name.sql in order, each once. */
#ifndef MIGRATE_H
#define MIGRATE_H

#include <stddef.h>
#include <libpq-fe.h>

struct migration {
	const char *name; /* "0001_initial" */
	const char *sql;
};

/* The migrations compiled into the binaries (generated at build time). */
extern const struct migration migrate_embedded[];
extern const int migrate_embedded_count;

/* Applies the pending migrations of m[0..n), each in its own transaction,
 * recorded with a checksum in schema_migrations, serialised between
 * concurrent migrators by an advisory lock. A changed applied file is an
 * error. Sets *applied to how many were applied. 0 / -1 with err. */
int migrate_apply(PGconn *c, const struct migration *m, int n, int *applied, char *err,
                  size_t errlen);

/* 0 when every migration of m[0..n) is applied; -1 with err naming the fix
 * ("database schema is at 0001, this build needs 0003: run billctl migrate"). */
int migrate_check(PGconn *c, const struct migration *m, int n, char *err, size_t errlen);

#endif
