/* test_migrate.c: the migrator against a real PostgreSQL (order, checksums,
 * transactions, the advisory lock, the schema check) and db_connect's errors. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "db.h"
#include "migrate.h"
#include "support.h"

static const struct migration two[] = {
    {"0001_a", "CREATE TABLE a (x int);"},
    {"0002_b", "CREATE TABLE b (y int); INSERT INTO b VALUES (1), (2);"},
};

/* A database with nothing in it (not even schema_migrations); returns a
 * connection to it and its URL in url. */
static PGconn *empty_db(const char *name, char *url, size_t len)
{
	PGconn *c;

	snprintf(url, len, "%s", ts_db_new(name));
	c = ts_db_connect(url);
	ts_db_long(c, "SET client_min_messages = warning");
	ts_db_long(c, "DROP SCHEMA public CASCADE");
	ts_db_long(c, "CREATE SCHEMA public");
	return c;
}

static long table_exists(PGconn *c, const char *table)
{
	char sql[160];

	snprintf(sql, sizeof(sql), "SELECT count(*) FROM pg_tables WHERE tablename = '%s'", table);
	return ts_db_long(c, sql);
}

static void assert_one_line(const char *err)
{
	assert_true(err[0] != '\0');
	assert_null(strchr(err, '\n'));
}

static void test_embedded_from_empty_then_noop(void **state)
{
	char url[512], err[512];
	PGconn *c = empty_db("mig_embedded", url, sizeof(url));
	int applied = -1;

	(void)state;
	assert_int_equal(
	    migrate_check(c, migrate_embedded, migrate_embedded_count, err, sizeof(err)), -1);
	assert_one_line(err);
	assert_non_null(strstr(err, "empty"));
	assert_non_null(strstr(err, "run billctl migrate"));

	assert_int_equal(
	    migrate_apply(c, migrate_embedded, migrate_embedded_count, &applied, err, sizeof(err)),
	    0);
	assert_int_equal(applied, migrate_embedded_count);
	assert_int_equal(table_exists(c, "subscriptions"), 1);
	assert_int_equal(table_exists(c, "audit_log"), 1);
	assert_int_equal(ts_db_long(c, "SELECT count(*) FROM schema_migrations WHERE checksum ~ "
	                               "'^[0-9a-f]{32}$'"),
	                 migrate_embedded_count);
	assert_int_equal(
	    migrate_check(c, migrate_embedded, migrate_embedded_count, err, sizeof(err)), 0);

	applied = -1;
	assert_int_equal(
	    migrate_apply(c, migrate_embedded, migrate_embedded_count, &applied, err, sizeof(err)),
	    0);
	assert_int_equal(applied, 0);
	assert_int_equal(ts_db_long(c, "SELECT count(*) FROM schema_migrations"),
	                 migrate_embedded_count);
	PQfinish(c);
}

static void test_partial_schema_check(void **state)
{
	char url[512], err[512];
	PGconn *c = empty_db("mig_partial", url, sizeof(url));
	int applied;

	(void)state;
	assert_int_equal(migrate_apply(c, two, 1, &applied, err, sizeof(err)), 0);
	assert_int_equal(applied, 1);
	assert_int_equal(migrate_check(c, two, 2, err, sizeof(err)), -1);
	assert_one_line(err);
	assert_non_null(strstr(err, "at 0001_a"));
	assert_non_null(strstr(err, "needs 0002_b"));
	assert_non_null(strstr(err, "run billctl migrate"));

	assert_int_equal(migrate_apply(c, two, 2, &applied, err, sizeof(err)), 0);
	assert_int_equal(applied, 1);
	assert_int_equal(ts_db_long(c, "SELECT count(*) FROM b"), 2);
	assert_int_equal(migrate_check(c, two, 2, err, sizeof(err)), 0);

	/* schema_migrations present but holding none of this build's. */
	ts_db_long(c, "TRUNCATE schema_migrations");
	assert_int_equal(migrate_check(c, two, 2, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "empty"));
	assert_non_null(strstr(err, "run billctl migrate"));
	PQfinish(c);
}

static void test_changed_migration_refused(void **state)
{
	const struct migration changed[] = {
	    {"0001_a", "CREATE TABLE a (x bigint);"},
	    two[1],
	    {"0003_c", "CREATE TABLE c (z int);"},
	};
	char url[512], err[512];
	PGconn *c = empty_db("mig_changed", url, sizeof(url));
	int applied;

	(void)state;
	assert_int_equal(migrate_apply(c, two, 2, &applied, err, sizeof(err)), 0);
	assert_int_equal(migrate_apply(c, changed, 3, &applied, err, sizeof(err)), -1);
	assert_int_equal(applied, 0);
	assert_one_line(err);
	assert_non_null(strstr(err, "migration 0001_a was changed after it was applied"));
	/* Nothing after the changed one ran. */
	assert_int_equal(table_exists(c, "c"), 0);
	assert_int_equal(ts_db_long(c, "SELECT count(*) FROM schema_migrations"), 2);

	/* billingd's check refuses it too. */
	assert_int_equal(migrate_check(c, changed, 1, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "0001_a was changed"));
	PQfinish(c);
}

static void test_failed_migration_rolls_back(void **state)
{
	const struct migration bad[] = {
	    two[0],
	    {"0002_bad", "CREATE TABLE c (z int); INSERT INTO c VALUES (1); SELECT 1 / 0;"},
	};
	char url[512], err[512];
	PGconn *c = empty_db("mig_failed", url, sizeof(url));
	int applied;

	(void)state;
	assert_int_equal(migrate_apply(c, bad, 2, &applied, err, sizeof(err)), -1);
	assert_int_equal(applied, 1);
	assert_one_line(err);
	assert_non_null(strstr(err, "migration 0002_bad: division by zero"));
	assert_int_equal(table_exists(c, "a"), 1);
	assert_int_equal(table_exists(c, "c"), 0);
	assert_int_equal(ts_db_long(c, "SELECT count(*) FROM schema_migrations"), 1);

	/* The connection is usable and the fixed migration applies. */
	assert_int_equal(migrate_apply(c, two, 2, &applied, err, sizeof(err)), 0);
	assert_int_equal(applied, 1);
	PQfinish(c);
}

static void test_out_of_order_refused(void **state)
{
	const struct migration swapped[] = {two[1], two[0]};
	char url[512], err[512];
	PGconn *c = empty_db("mig_order", url, sizeof(url));
	int applied;

	(void)state;
	assert_int_equal(migrate_apply(c, swapped, 2, &applied, err, sizeof(err)), -1);
	assert_one_line(err);
	assert_non_null(strstr(err, "out of order: 0001_a after 0002_b"));
	assert_int_equal(table_exists(c, "b"), 0);
	PQfinish(c);
}

struct migrator {
	const char *url;
	const struct migration *m;
	int n;
	pthread_barrier_t *start;
	int rc, applied;
	char err[512];
};

static void *migrate_thread(void *arg)
{
	struct migrator *t = arg;
	PGconn *c = ts_db_connect(t->url);

	pthread_barrier_wait(t->start);
	t->rc = migrate_apply(c, t->m, t->n, &t->applied, t->err, sizeof(t->err));
	PQfinish(c);
	return NULL;
}

/* Two migrators, each with its own connection, started together: both
 * succeed and every migration is applied once. Without the lock the second
 * would fail on the first's CREATE TABLE (or its schema_migrations row). */
static void run_two_migrators(const char *name, const struct migration *m, int n)
{
	char url[512];
	PGconn *c = empty_db(name, url, sizeof(url));
	pthread_barrier_t start;
	struct migrator t[2];
	pthread_t th[2];

	pthread_barrier_init(&start, NULL, 2);
	for (int i = 0; i < 2; i++) {
		t[i] = (struct migrator){.url = url, .m = m, .n = n, .start = &start};
		assert_int_equal(pthread_create(&th[i], NULL, migrate_thread, &t[i]), 0);
	}
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	pthread_barrier_destroy(&start);
	for (int i = 0; i < 2; i++) {
		if (t[i].rc != 0)
			fail_msg("migrator %d: %s", i, t[i].err);
	}
	assert_int_equal(t[0].applied + t[1].applied, n);
	assert_int_equal(ts_db_long(c, "SELECT count(*) FROM schema_migrations"), n);
	PQfinish(c);
}

static void test_two_migrators_custom(void **state)
{
	/* The sleep holds the first migrator inside its transaction while the
	 * second arrives. */
	const struct migration slow[] = {
	    {"0001_slow", "CREATE TABLE s (x int); SELECT pg_sleep(0.3);"},
	    two[1],
	};

	(void)state;
	run_two_migrators("mig_two_custom", slow, 2);
}

static void test_two_migrators_embedded(void **state)
{
	(void)state;
	run_two_migrators("mig_two_embedded", migrate_embedded, migrate_embedded_count);
}

/* A loopback port nobody listens on. */
static int free_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int s = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(s >= 0);
	assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(s, (struct sockaddr *)&a, &len), 0);
	close(s);
	return ntohs(a.sin_port);
}

static void test_connect_no_server(void **state)
{
	char url[256], err[512];

	(void)state;
	snprintf(url, sizeof(url), "postgresql://billing:Sekr3t-pw@127.0.0.1:%d/billing",
	         free_port());
	assert_null(db_connect(url, "tests", err, sizeof(err)));
	assert_one_line(err);
	assert_non_null(strstr(err, "Connection refused"));
	assert_null(strstr(err, "Sekr3t-pw"));
}

static void test_connect_wrong_password(void **state)
{
	const char *host = getenv("PGHOST"), *port = getenv("PGPORT");
	char url[256], err[512];

	(void)state;
	snprintf(url, sizeof(url), "postgresql://billing:Wr0ng-pw-x@%s:%s/billing",
	         host ? host : "127.0.0.1", port ? port : "5432");
	assert_null(db_connect(url, "tests", err, sizeof(err)));
	assert_one_line(err);
	assert_non_null(strstr(err, "password authentication failed"));
	assert_null(strstr(err, "Wr0ng-pw-x"));
}

/* What every connection of ours sets up: the actor for the audit, UTC, and
 * no JIT (the claim's generic plan, estimated over a million subscriptions,
 * was compiled at every run: 30-40 ms for a statement that runs in 2). */
static void test_connect_session(void **state)
{
	char err[512];
	PGconn *c = db_connect(getenv("DATABASE_URL"), "tests-session", err, sizeof(err));
	PGresult *r;

	(void)state;
	assert_non_null(c);
	r = PQexec(c, "SELECT current_setting('billing.actor'), current_setting('TimeZone'),"
	              "       current_setting('jit')");
	assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
	assert_string_equal(PQgetvalue(r, 0, 0), "tests-session");
	assert_string_equal(PQgetvalue(r, 0, 1), "UTC");
	assert_string_equal(PQgetvalue(r, 0, 2), "off");
	PQclear(r);
	PQfinish(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_embedded_from_empty_then_noop),
	    cmocka_unit_test(test_partial_schema_check),
	    cmocka_unit_test(test_changed_migration_refused),
	    cmocka_unit_test(test_failed_migration_rolls_back),
	    cmocka_unit_test(test_out_of_order_refused),
	    cmocka_unit_test(test_two_migrators_custom),
	    cmocka_unit_test(test_two_migrators_embedded),
	    cmocka_unit_test(test_connect_no_server),
	    cmocka_unit_test(test_connect_wrong_password),
	    cmocka_unit_test(test_connect_session),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
