/* migrate.c: applies the numbered migrations in order, each once.
 *
 * Each migration runs in its own transaction and is recorded with the MD5 of
 * its text; a migration whose text changed after it was applied is an error.
 * A session advisory lock serialises concurrent migrators. */
#include <stdio.h>
#include <string.h>
#include <openssl/evp.h>

#include "db.h"
#include "migrate.h"

#define MIGRATE_LOCK "7283640011"

static void checksum(const char *sql, char out[33])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int len = 0;

	EVP_Digest(sql, strlen(sql), md, &len, EVP_md5(), NULL);
	for (unsigned int i = 0; i < 16; i++)
		sprintf(out + 2 * i, "%02x", md[i]);
}

static void changed_error(const char *name, const char *want, const char *have, char *err,
                          size_t errlen)
{
	snprintf(err, errlen,
	         "migration %s was changed after it was applied (checksum %s, applied %s): "
	         "restore it and add a new migration instead",
	         name, want, have);
}

/* Names must increase: the order applied is the order of the array. */
static int check_order(const struct migration *m, int n, char *err, size_t errlen)
{
	for (int i = 1; i < n; i++) {
		if (strcmp(m[i - 1].name, m[i].name) >= 0) {
			snprintf(err, errlen, "migrations out of order: %s after %s", m[i].name,
			         m[i - 1].name);
			return -1;
		}
	}
	return 0;
}

/* Called under the lock; checking first keeps IF NOT EXISTS's NOTICE off
 * stderr. */
static int ensure_table(PGconn *c, char *err, size_t errlen)
{
	PGresult *r =
	    db_query(c, "SELECT to_regclass('schema_migrations') IS NULL", 0, NULL, err, errlen);
	int missing;

	if (!r)
		return -1;
	missing = strcmp(db_str(r, 0, 0), "t") == 0;
	PQclear(r);
	if (!missing)
		return 0;
	return db_exec(c,
	               "CREATE TABLE schema_migrations ("
	               " name text PRIMARY KEY, checksum text NOT NULL,"
	               " applied_at timestamptz NOT NULL DEFAULT now())",
	               0, NULL, err, errlen);
}

/* The checksum recorded for name into out ("" when not applied). */
static int applied_checksum(PGconn *c, const char *name, char out[33], char *err, size_t errlen)
{
	const char *p[1] = {name};
	PGresult *r = db_query(c, "SELECT checksum FROM schema_migrations WHERE name = $1", 1, p,
	                       err, errlen);

	if (!r)
		return -1;
	snprintf(out, 33, "%s", PQntuples(r) ? db_str(r, 0, 0) : "");
	PQclear(r);
	return 0;
}

static int apply_one(PGconn *c, const struct migration *m, const char *sum, char *err,
                     size_t errlen)
{
	const char *p[2] = {m->name, sum};
	PGresult *r;

	if (db_begin(c, err, errlen) < 0)
		return -1;
	/* Simple query protocol: a migration file holds several statements. */
	r = PQexec(c, m->sql);
	if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
		const char *msg = PQresultErrorMessage(r);
		if (strncmp(msg, "ERROR:  ", 8) == 0)
			msg += 8;
		snprintf(err, errlen, "migration %s: %.*s", m->name, (int)strcspn(msg, "\n"), msg);
		PQclear(r);
		db_rollback(c);
		return -1;
	}
	PQclear(r);
	if (db_exec(c, "INSERT INTO schema_migrations (name, checksum) VALUES ($1, $2)", 2, p, err,
	            errlen) < 0 ||
	    db_commit(c, err, errlen) < 0) {
		db_rollback(c);
		return -1;
	}
	return 0;
}

int migrate_apply(PGconn *c, const struct migration *m, int n, int *applied, char *err,
                  size_t errlen)
{
	int rc = 0;

	*applied = 0;
	if (check_order(m, n, err, errlen) < 0)
		return -1;
	if (db_exec(c, "SELECT pg_advisory_lock(" MIGRATE_LOCK ")", 0, NULL, err, errlen) < 0)
		return -1;
	if (ensure_table(c, err, errlen) < 0)
		rc = -1;
	for (int i = 0; rc == 0 && i < n; i++) {
		char want[33], have[33];

		checksum(m[i].sql, want);
		if (applied_checksum(c, m[i].name, have, err, errlen) < 0) {
			rc = -1;
		} else if (have[0] && strcmp(have, want) != 0) {
			changed_error(m[i].name, want, have, err, errlen);
			rc = -1;
		} else if (!have[0]) {
			if (apply_one(c, &m[i], want, err, errlen) < 0)
				rc = -1;
			else
				(*applied)++;
		}
	}
	PQclear(PQexec(c, "SELECT pg_advisory_unlock(" MIGRATE_LOCK ")"));
	return rc;
}

int migrate_check(PGconn *c, const struct migration *m, int n, char *err, size_t errlen)
{
	PGresult *r =
	    db_query(c, "SELECT name, checksum FROM schema_migrations", 0, NULL, err, errlen);
	const char *at = NULL; /* the last of m applied */
	int missing = -1, rc = 0;

	if (!r) {
		if (strcmp(db_last_sqlstate(), "42P01") == 0)
			snprintf(err, errlen,
			         "database schema is empty, this build needs %s: run "
			         "billctl migrate",
			         n ? m[n - 1].name : "nothing");
		return -1;
	}
	for (int i = 0; i < n && rc == 0; i++) {
		char want[33];
		int j = 0;

		while (j < PQntuples(r) && strcmp(db_str(r, j, 0), m[i].name) != 0)
			j++;
		if (j == PQntuples(r)) {
			if (missing < 0)
				missing = i;
			continue;
		}
		at = m[i].name;
		checksum(m[i].sql, want);
		if (strcmp(db_str(r, j, 1), want) != 0) {
			changed_error(m[i].name, want, db_str(r, j, 1), err, errlen);
			rc = -1;
		}
	}
	if (rc == 0 && missing >= 0) {
		snprintf(err, errlen,
		         "database schema is %s%s, this build needs %s: run billctl migrate",
		         at ? "at " : "empty", at ? at : "", m[n - 1].name);
		rc = -1;
	}
	PQclear(r);
	return rc;
}
