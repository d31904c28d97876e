/* test_invariants.c: the ledger's invariants are enforced by the database
 * itself: each test breaks one with direct SQL and checks the SQLSTATE of
 * the refusal; concurrent refunds are run on two connections. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "db.h"
#include "support.h"

#define UNIQUE       "23505"
#define CHECK        "23514"
#define APPEND       "42501" /* audit_log: insufficient_privilege */
#define NPARAMS(...) (int)(sizeof((const char *[]){__VA_ARGS__}) / sizeof(const char *))

static char url[512];
static PGconn *db;
static char plan_id[24];
static char err[512];

static int run(PGconn *c, const char *sql, int n, const char *const *p)
{
	return db_exec(c, sql, n, p, err, sizeof(err));
}
#define RUN(c, sql, ...) run(c, sql, NPARAMS(__VA_ARGS__), (const char *[]){__VA_ARGS__})

static void refused_as(PGconn *c, const char *sqlstate, const char *sql, int n,
                       const char *const *p)
{
	if (run(c, sql, n, p) == 0)
		fail_msg("accepted: %s", sql);
	if (strcmp(db_last_sqlstate(), sqlstate) != 0)
		fail_msg("%s: SQLSTATE %s, expected %s (%s)", sql, db_last_sqlstate(), sqlstate,
		         err);
}
#define REFUSED(c, state, sql, ...)                                                                \
	refused_as(c, state, sql, NPARAMS(__VA_ARGS__), (const char *[]){__VA_ARGS__})
#define OK(c, sql, ...)                                                                            \
	do {                                                                                       \
		if (RUN(c, sql, __VA_ARGS__) < 0)                                                  \
			fail_msg("%s: %s", sql, err);                                              \
	} while (0)

/* The first column of the first row of a parameterised query, into out. */
static void value(PGconn *c, char *out, size_t len, const char *sql, int n, const char *const *p)
{
	PGresult *r = db_query(c, sql, n, p, err, sizeof(err));

	if (!r)
		fail_msg("%s: %s", sql, err);
	assert_true(PQntuples(r) > 0);
	snprintf(out, len, "%s", db_str(r, 0, 0));
	PQclear(r);
}
#define VALUE(c, out, sql, ...)                                                                    \
	value(c, out, sizeof(out), sql, NPARAMS(__VA_ARGS__), (const char *[]){__VA_ARGS__})

static const char *charge_sql =
    "INSERT INTO charges (mch_order_no, kind, customer_id, amount_cents, state, pay_order_id) "
    "VALUES ($1, 'one_off', 'cust1', $2, $3, $4) RETURNING id";
static const char *sub_charge_sql =
    "INSERT INTO charges (mch_order_no, kind, subscription_id, period, attempt, customer_id, "
    "amount_cents, state, pay_order_id) VALUES ($1, 'subscription', $2, $3, $4, 'cust1', 1000, "
    "$5, $6)";
static const char *refund_sql = "INSERT INTO refunds (mch_refund_no, kind, charge_id, "
                                "amount_cents) VALUES ($1, $2, $3, $4)";

/* A succeeded one-off charge of amount cents; its id into id. */
static void succeeded_charge(const char *mch_order_no, const char *amount, char *id, size_t len)
{
	char pay[40];

	snprintf(pay, sizeof(pay), "P-%s", mch_order_no);
	value(db, id, len, charge_sql, 4, (const char *[]){mch_order_no, amount, "succeeded", pay});
}

static void new_subscription(char *id, size_t len)
{
	value(db, id, len,
	      "INSERT INTO subscriptions (customer_id, plan_id, state, anchor) "
	      "VALUES ('cust1', $1, 'active', now()) RETURNING id",
	      1, (const char *[]){plan_id});
}

static int setup(void **state)
{
	(void)state;
	snprintf(url, sizeof(url), "%s", ts_db_new("invariants"));
	db = ts_db_connect(url);
	OK(db, "INSERT INTO customers (customer_id) VALUES ($1)", "cust1");
	VALUE(db, plan_id,
	      "INSERT INTO plans (code, version, name, amount_cents, currency, interval, "
	      "interval_count, checksum) VALUES ($1, 1, 'Basic', 1000, 'CAD', 'month', 1, 'x') "
	      "RETURNING id",
	      "basic");
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	PQfinish(db);
	return 0;
}

static void test_unique_mch_order_no(void **state)
{
	char id[24];

	(void)state;
	succeeded_charge("DUP1", "500", id, sizeof(id));
	REFUSED(db, UNIQUE, charge_sql, "DUP1", "700", "pending", NULL);
}

static void test_unique_mch_refund_no(void **state)
{
	char id[24];

	(void)state;
	succeeded_charge("RDUPC", "1000", id, sizeof(id));
	OK(db, refund_sql, "RDUP1", "refund", id, "100");
	REFUSED(db, UNIQUE, refund_sql, "RDUP1", "refund", id, "100");
}

/* cc_query has one namespace for both: a refund order's mchOrderNo is its
 * mchRefundNo. */
static void test_order_numbers_unique_across_tables(void **state)
{
	char id[24];

	(void)state;
	succeeded_charge("XTAB1", "1000", id, sizeof(id));
	REFUSED(db, UNIQUE, refund_sql, "XTAB1", "refund", id, "100");
	OK(db, refund_sql, "XTAB1R1", "refund", id, "100");
	REFUSED(db, UNIQUE, charge_sql, "XTAB1R1", "100", "pending", NULL);
}

static void test_one_success_per_period(void **state)
{
	char sub[24];

	(void)state;
	new_subscription(sub, sizeof(sub));
	OK(db, sub_charge_sql, "S1P1A1", sub, "1", "1", "failed", NULL);
	OK(db, sub_charge_sql, "S1P1A2", sub, "1", "2", "succeeded", "P-S1P1A2");
	REFUSED(db, UNIQUE, sub_charge_sql, "S1P1A3", sub, "1", "3", "succeeded", "P-S1P1A3");
	/* Nor by moving a failed attempt to succeeded. */
	REFUSED(db, UNIQUE,
	        "UPDATE charges SET state = 'succeeded', pay_order_id = 'P-x' WHERE "
	        "mch_order_no = $1",
	        "S1P1A1");
	/* The next period is another matter. */
	OK(db, sub_charge_sql, "S1P2A1", sub, "2", "1", "succeeded", "P-S1P2A1");
}

static void test_one_open_attempt(void **state)
{
	char sub[24];

	(void)state;
	new_subscription(sub, sizeof(sub));
	OK(db, sub_charge_sql, "S2P1A1", sub, "1", "1", "pending", NULL);
	REFUSED(db, UNIQUE, sub_charge_sql, "S2P1A2", sub, "1", "2", "pending", NULL);
	REFUSED(db, UNIQUE, sub_charge_sql, "S2P2A1", sub, "2", "1", "unknown", NULL);
	OK(db, "UPDATE charges SET state = 'unknown' WHERE mch_order_no = $1", "S2P1A1");
	REFUSED(db, UNIQUE, sub_charge_sql, "S2P1A2", sub, "1", "2", "pending", NULL);
	/* Only once the outcome is settled may another attempt open. */
	OK(db, "UPDATE charges SET state = 'failed' WHERE mch_order_no = $1", "S2P1A1");
	OK(db, sub_charge_sql, "S2P1A2", sub, "1", "2", "pending", NULL);
}

static void test_refunds_within_charge(void **state)
{
	char id[24], rid[24];

	(void)state;
	succeeded_charge("OVER1", "1000", id, sizeof(id));
	REFUSED(db, CHECK, refund_sql, "OVER1-R0", "refund", id, "1001");
	OK(db, refund_sql, "OVER1-R1", "refund", id, "600");
	REFUSED(db, CHECK, refund_sql, "OVER1-R2", "refund", id, "401");
	/* A failed refund stops counting, and cannot be revived past the charge. */
	OK(db, "UPDATE refunds SET state = 'failed' WHERE mch_refund_no = $1", "OVER1-R1");
	OK(db, refund_sql, "OVER1-R3", "refund", id, "1000");
	REFUSED(db, CHECK, "UPDATE refunds SET state = 'succeeded' WHERE mch_refund_no = $1",
	        "OVER1-R1");
	/* An unknown one still counts. */
	VALUE(db, rid, "SELECT id FROM refunds WHERE mch_refund_no = $1", "OVER1-R3");
	OK(db, "UPDATE refunds SET state = 'unknown' WHERE id = $1", rid);
	REFUSED(db, CHECK, refund_sql, "OVER1-R4", "refund", id, "1");
	assert_int_equal(ts_db_long(db, "SELECT sum(r.amount_cents) FROM refunds r JOIN charges c "
	                                "ON c.id = r.charge_id WHERE c.mch_order_no = 'OVER1' AND "
	                                "r.state <> 'failed'"),
	                 1000);
}

static void test_refund_of_unsucceeded_charge(void **state)
{
	char pending[24], failed[24];

	(void)state;
	VALUE(db, pending, charge_sql, "NS1", "1000", "pending", NULL);
	VALUE(db, failed, charge_sql, "NS2", "1000", "failed", NULL);
	REFUSED(db, CHECK, refund_sql, "NS1-R", "refund", pending, "100");
	REFUSED(db, CHECK, refund_sql, "NS2-R", "void", failed, "1000");
}

static void test_void_takes_whole_charge(void **state)
{
	char a[24], b[24];

	(void)state;
	succeeded_charge("VOID1", "1000", a, sizeof(a));
	REFUSED(db, CHECK, refund_sql, "VOID1-V0", "void", a, "999");
	OK(db, refund_sql, "VOID1-R1", "refund", a, "1");
	REFUSED(db, CHECK, refund_sql, "VOID1-V1", "void", a, "1000");

	succeeded_charge("VOID2", "1000", b, sizeof(b));
	OK(db, refund_sql, "VOID2-V1", "void", b, "1000");
	REFUSED(db, CHECK, refund_sql, "VOID2-R1", "refund", b, "1");
}

/* Nothing the sums and the gateway's records rely on can be edited away. */
static void test_ledger_final(void **state)
{
	char id[24];

	(void)state;
	succeeded_charge("FIN1", "1000", id, sizeof(id));
	OK(db, refund_sql, "FIN1-R1", "refund", id, "500");
	REFUSED(db, CHECK, "UPDATE charges SET state = 'failed' WHERE id = $1", id);
	REFUSED(db, CHECK, "UPDATE charges SET amount_cents = 400 WHERE id = $1", id);
	REFUSED(db, CHECK, "UPDATE charges SET pay_order_id = 'other' WHERE id = $1", id);
	REFUSED(db, CHECK, "UPDATE charges SET mch_order_no = 'FIN2' WHERE id = $1", id);
	REFUSED(db, CHECK, "UPDATE refunds SET amount_cents = 1 WHERE mch_refund_no = $1",
	        "FIN1-R1");
	REFUSED(db, CHECK, "UPDATE refunds SET mch_refund_no = 'FIN1-X' WHERE mch_refund_no = $1",
	        "FIN1-R1");
	OK(db, "UPDATE refunds SET state = 'succeeded' WHERE mch_refund_no = $1", "FIN1-R1");
	REFUSED(db, CHECK, "UPDATE refunds SET state = 'failed' WHERE mch_refund_no = $1",
	        "FIN1-R1");
}

static void test_audit_log_append_only(void **state)
{
	long before;

	(void)state;
	before = ts_db_long(db, "SELECT count(*) FROM audit_log");
	assert_true(before > 0);
	REFUSED(db, APPEND, "UPDATE audit_log SET actor = $1", "mallory");
	REFUSED(db, APPEND, "DELETE FROM audit_log WHERE actor <> $1", "nobody");
	refused_as(db, APPEND, "TRUNCATE audit_log", 0, NULL);
	assert_int_equal(ts_db_long(db, "SELECT count(*) FROM audit_log"), before);
}

static void test_amounts_positive(void **state)
{
	char id[24];

	(void)state;
	succeeded_charge("AMT1", "1000", id, sizeof(id));
	REFUSED(db, CHECK, charge_sql, "AMT0", "0", "pending", NULL);
	REFUSED(db, CHECK, charge_sql, "AMTN", "-5", "pending", NULL);
	REFUSED(db, CHECK, refund_sql, "AMT1-R0", "refund", id, "0");
	REFUSED(db, CHECK, refund_sql, "AMT1-RN", "refund", id, "-1");
	REFUSED(db, CHECK,
	        "INSERT INTO plans (code, version, name, amount_cents, currency, interval, "
	        "interval_count, checksum) VALUES ('free', 1, 'Free', $1, 'CAD', 'month', 1, 'x')",
	        "0");
}

static void test_currency_cad_only(void **state)
{
	(void)state;
	REFUSED(db, CHECK,
	        "INSERT INTO charges (mch_order_no, kind, customer_id, amount_cents, currency) "
	        "VALUES ('USD1', 'one_off', 'cust1', 100, $1)",
	        "USD");
	REFUSED(db, CHECK,
	        "INSERT INTO plans (code, version, name, amount_cents, currency, interval, "
	        "interval_count, checksum) VALUES ('usd', 1, 'US', 100, $1, 'month', 1, 'x')",
	        "USD");
}

static void test_states_checked(void **state)
{
	char id[24], sub[24];

	(void)state;
	succeeded_charge("ST1", "1000", id, sizeof(id));
	new_subscription(sub, sizeof(sub));
	REFUSED(db, CHECK, charge_sql, "ST2", "100", "done", NULL);
	REFUSED(db, CHECK,
	        "INSERT INTO refunds (mch_refund_no, kind, charge_id, amount_cents, state) "
	        "VALUES ('ST1-R', 'refund', $1, 100, 'ok')",
	        id);
	REFUSED(db, CHECK, refund_sql, "ST1-R", "chargeback", id, "100");
	REFUSED(db, CHECK, "UPDATE subscriptions SET state = 'zombie' WHERE id = $1", sub);
	REFUSED(db, CHECK, "UPDATE customers SET state = 'maybe' WHERE customer_id = $1", "cust1");
	REFUSED(db, CHECK, "INSERT INTO customers (customer_id, state) VALUES ('c2', $1)", "gone");
}

/* Two connections refund one charge at once: the second waits for the
 * first's lock on the charge and then sees its refund. */
struct refunder {
	const char *actor, *mch_refund_no, *charge_id;
	sem_t *inserted, *release; /* first: posts inserted, waits release */
	int commit;                /* first: COMMIT, else ROLLBACK */
	const char *isolation;     /* default_transaction_isolation of the connection */
	int rc;
	char sqlstate[6];
};

static void *refund_thread(void *arg)
{
	struct refunder *t = arg;
	char e[512];
	PGconn *c = db_connect(url, t->actor, e, sizeof(e));
	const char *p[4] = {t->mch_refund_no, "refund", t->charge_id, "600"};

	const char *iso[1] = {t->isolation};

	/* No cmocka assertions off the main thread: the outcome goes in t. */
	t->rc = c ? db_exec(c, "SELECT set_config('default_transaction_isolation', $1, false)", 1,
	                    iso, e, sizeof(e))
	          : -1;
	if (t->rc == 0)
		t->rc = db_begin(c, e, sizeof(e));
	if (t->rc == 0)
		t->rc = db_exec(c, refund_sql, 4, p, e, sizeof(e));
	snprintf(t->sqlstate, sizeof(t->sqlstate), "%s", db_last_sqlstate());
	if (t->inserted) {
		sem_post(t->inserted);
		sem_wait(t->release);
	}
	if (t->rc == 0 && (!t->inserted || t->commit))
		t->rc = db_commit(c, e, sizeof(e));
	else if (c)
		db_rollback(c);
	PQfinish(c);
	return NULL;
}

#define SERIALIZATION "40001"

static void concurrent_refunds(const char *order, int first_commits, const char *isolation)
{
	char id[24], a_no[32], b_no[32], sum[24];
	sem_t inserted, release;
	struct refunder a, b;
	pthread_t ta, tb;
	int waited = 0;

	succeeded_charge(order, "1000", id, sizeof(id));
	snprintf(a_no, sizeof(a_no), "%s-A", order);
	snprintf(b_no, sizeof(b_no), "%s-B", order);
	sem_init(&inserted, 0, 0);
	sem_init(&release, 0, 0);
	a = (struct refunder){"refund-a",    a_no,      id, &inserted, &release,
	                      first_commits, isolation, -1, ""};
	b = (struct refunder){"refund-b", b_no, id, NULL, NULL, 1, isolation, -1, ""};
	assert_int_equal(pthread_create(&ta, NULL, refund_thread, &a), 0);
	sem_wait(&inserted);
	assert_int_equal(a.rc, 0);
	assert_int_equal(pthread_create(&tb, NULL, refund_thread, &b), 0);
	/* Hold the first transaction open until the second is seen waiting. */
	for (int i = 0; i < 1000 && !waited; i++) {
		waited = ts_db_long(
		             db, "SELECT count(*) FROM pg_stat_activity WHERE "
		                 "application_name = 'refund-b' AND wait_event_type = 'Lock'") > 0;
		if (!waited)
			usleep(10000);
	}
	sem_post(&release);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	sem_destroy(&inserted);
	sem_destroy(&release);
	assert_true(waited);
	assert_int_equal(a.rc, 0);
	if (first_commits) {
		/* Refused as too much, or (a snapshot older than the first's
		 * commit) as a serialization failure that a retry resolves. */
		assert_int_equal(b.rc, -1);
		if (strcmp(isolation, "read committed") == 0)
			assert_string_equal(b.sqlstate, CHECK);
		else if (strcmp(b.sqlstate, CHECK) != 0 && strcmp(b.sqlstate, SERIALIZATION) != 0)
			fail_msg("%s: SQLSTATE %s", isolation, b.sqlstate);
	} else {
		assert_int_equal(b.rc, 0);
	}
	VALUE(db, sum, "SELECT sum(amount_cents) FROM refunds WHERE charge_id = $1", id);
	/* Either way exactly one 600-cent refund of the 1000 stands. */
	assert_string_equal(sum, "600");
}

/* At every isolation level a connection may be set to. */
static void test_concurrent_refunds_never_exceed(void **state)
{
	(void)state;
	concurrent_refunds("CONC1", 1, "read committed");
	concurrent_refunds("CONC3", 1, "repeatable read");
	concurrent_refunds("CONC5", 1, "serializable");
}

/* The control: when the first rolls back, the waiting one goes through. */
static void test_concurrent_refund_after_rollback(void **state)
{
	(void)state;
	concurrent_refunds("CONC2", 0, "read committed");
	concurrent_refunds("CONC4", 0, "repeatable read");
	concurrent_refunds("CONC6", 0, "serializable");
}

static void test_audit_rows_with_actor(void **state)
{
	char e[512], id[24], n[256];
	PGconn *c = db_connect(url, "alice", e, sizeof(e));

	(void)state;
	assert_non_null(c);
	assert_int_equal(db_set_now(c, (int64_t)time(NULL), e, sizeof(e)), 0);
	OK(c, "INSERT INTO customers (customer_id) VALUES ($1)", "aud1");
	OK(c, "UPDATE customers SET state = 'bound' WHERE customer_id = $1", "aud1");
	OK(c, "UPDATE customers SET email = 'a@example.com' WHERE customer_id = $1", "aud1");
	VALUE(db, n,
	      "SELECT string_agg(coalesce(old_state, '-') || '>' || new_state, ',' ORDER BY id) "
	      "FROM audit_log WHERE entity = 'customers' AND entity_id = $1 AND actor = 'alice'",
	      "aud1");
	/* The email change is no state change, so no row. */
	assert_string_equal(n, "->pending,pending>bound");

	VALUE(c, id, charge_sql, "AUD1", "1000", "pending", NULL);
	OK(c, "UPDATE charges SET state = 'succeeded', pay_order_id = 'P-AUD1' WHERE id = $1", id);
	OK(c, refund_sql, "AUD1-R1", "refund", id, "100");
	value(
	    db, n, sizeof(n),
	    "SELECT string_agg(entity || ':' || coalesce(old_state, '-') || '>' || new_state, ',' "
	    "ORDER BY id) FROM audit_log WHERE actor = 'alice' AND entity <> 'customers'",
	    0, NULL);
	assert_string_equal(n, "charges:->pending,charges:pending>succeeded,refunds:->pending");
	VALUE(db, n, "SELECT requested_by FROM refunds WHERE mch_refund_no = $1", "AUD1-R1");
	assert_string_equal(n, "alice");
	PQfinish(c);
}

/* The scheduler's due query reads the partial index, not the table: with
 * 50,000 subscriptions of which 50 are due, a sequential scan would be
 * chosen only if the index stopped matching the query. */
static void test_due_query_uses_index(void **state)
{
	char e[512];
	/* A fixed instant, not now(): a slow insert must not make more rows due. */
	const char *now[1] = {"2026-06-01 00:00:00+00"};
	PGconn *c;
	PGresult *r;
	char plan[8192] = "";
	size_t at = 0;

	(void)state;
	c = ts_db_connect(ts_db_new("invariants_due"));
	OK(c, "INSERT INTO customers (customer_id) VALUES ($1)", "due1");
	OK(c,
	   "INSERT INTO plans (code, version, name, amount_cents, currency, interval, "
	   "interval_count, checksum) VALUES ($1, 1, 'Basic', 1000, 'CAD', 'month', 1, 'x')",
	   "basic");
	/* Every 1000th is due; a tenth are canceled (out of the index). */
	OK(c,
	   "INSERT INTO subscriptions (customer_id, plan_id, state, anchor, next_charge_at) "
	   "SELECT 'due1', (SELECT id FROM plans), CASE WHEN i % 10 = 5 THEN 'canceled' "
	   "ELSE 'active' END, '2026-06-01 00:00:00+00', CASE WHEN i % 10 = 5 THEN NULL "
	   "WHEN i % 1000 = 0 THEN timestamptz '2026-06-01 00:00:00+00' - interval '1 hour' "
	   "ELSE timestamptz '2026-06-01 00:00:00+00' + make_interval(mins => i) END "
	   "FROM generate_series(1, $1::int) i",
	   "50000");
	assert_int_equal(db_exec(c, "ANALYZE subscriptions", 0, NULL, e, sizeof(e)), 0);
	r = db_query(c,
	             "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) SELECT id FROM subscriptions WHERE "
	             "next_charge_at <= $1::timestamptz AND next_charge_at IS NOT NULL AND state "
	             "IN ('trialing','active','past_due') ORDER BY next_charge_at LIMIT 256 FOR "
	             "UPDATE SKIP LOCKED",
	             1, now, e, sizeof(e));
	if (!r)
		fail_msg("explain: %s", e);
	for (int i = 0; i < PQntuples(r); i++)
		at += (size_t)snprintf(plan + at, sizeof(plan) - at, "%s\n", db_str(r, i, 0));
	PQclear(r);
	if (!strstr(plan, "Index Scan using subscriptions_due") || strstr(plan, "Seq Scan"))
		fail_msg("due query plan:\n%s", plan);
	if (!strstr(plan, "Limit (actual rows=50 "))
		fail_msg("due query plan:\n%s", plan);
	PQfinish(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_unique_mch_order_no),
	    cmocka_unit_test(test_unique_mch_refund_no),
	    cmocka_unit_test(test_order_numbers_unique_across_tables),
	    cmocka_unit_test(test_one_success_per_period),
	    cmocka_unit_test(test_one_open_attempt),
	    cmocka_unit_test(test_refunds_within_charge),
	    cmocka_unit_test(test_refund_of_unsucceeded_charge),
	    cmocka_unit_test(test_void_takes_whole_charge),
	    cmocka_unit_test(test_ledger_final),
	    cmocka_unit_test(test_audit_log_append_only),
	    cmocka_unit_test(test_amounts_positive),
	    cmocka_unit_test(test_currency_cad_only),
	    cmocka_unit_test(test_states_checked),
	    cmocka_unit_test(test_concurrent_refunds_never_exceed),
	    cmocka_unit_test(test_concurrent_refund_after_rollback),
	    cmocka_unit_test(test_audit_rows_with_actor),
	    cmocka_unit_test(test_due_query_uses_index),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
