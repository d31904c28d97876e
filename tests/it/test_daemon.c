/* test_daemon: billingd as real processes against the real PostgreSQL and
 * the fake gateway, under failure: kill -9 at random moments (also with the
 * gateway charging again on a re-sent order number), four daemons on one
 * database, PostgreSQL restarted mid-run, SIGTERM while charging, a lease
 * outlived by queued requests; its logs (one line per charge, never the
 * merchant key), an old schema, the database down, and SIGHUP reloading
 * plans. Each run ends with the ledger checked order by order against the
 * gateway's. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "calendar.h"
#include "db.h"
#include "gateway.h"
#include "owner_lock.h"
#include "support.h"

/* The daemons run at this moment (--now); every subscription made by
 * populate() is due then, once. */
#define NOW_ISO "2026-03-02T12:00:00Z"

/* The shortest lease the configuration allows (timeout + 5 s). */
#define FAST_CONFIG                                                                                \
	"listen:\n  address: 127.0.0.1:0\n"                                                        \
	"gateway:\n  timeout_ms: 1000\n  max_in_flight: 4\n"                                       \
	"billing:\n  lease_seconds: 6\n  poll_interval_ms: 100\n"

#define MAX_DAEMONS 8

struct env {
	struct ts_fakegw fake;
	struct cfg cfg;
	PGconn *db;
	struct gw_client *gw;
	char url[512];
	char dir[128];
	char config[512];
	char log[512];
	pid_t pids[MAX_DAEMONS]; /* running daemons, for the teardown */
};

static struct env the_env, *live;

static long now_unix(void)
{
	int64_t t;
	char err[256];

	if (cal_parse_time(NOW_ISO, &t, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	return (long)t;
}

static void env_start(struct env *e, const char *name, const char *fake_args,
                      const char *extra_yaml)
{
	char err[512];

	memset(e, 0, sizeof(*e));
	ts_fakegw_start(&e->fake, fake_args);
	live = e;
	snprintf(e->url, sizeof(e->url), "%s", ts_db_new(name));
	ts_cfg(&e->cfg, e->url, &e->fake);
	e->db = ts_db_connect(e->url);
	ts_sync_plans(e->db);
	e->gw = gw_client_new(&e->cfg.gateway, err, sizeof(err));
	assert_non_null(e->gw);
	snprintf(e->dir, sizeof(e->dir), "/tmp/test_daemon.XXXXXX");
	assert_non_null(mkdtemp(e->dir));
	snprintf(e->config, sizeof(e->config), "%s",
	         ts_write_config(e->dir, e->url, &e->fake, extra_yaml));
	snprintf(e->log, sizeof(e->log), "%s/billingd.log", e->dir);
}

static void env_stop(struct env *e)
{
	char cmd[256];

	live = NULL;
	for (int i = 0; i < MAX_DAEMONS; i++)
		if (e->pids[i] > 0)
			ts_kill_pid(e->pids[i]);
	gw_client_free(e->gw);
	PQfinish(e->db);
	ts_fakegw_stop(&e->fake);
	/* KEEP_TMP=1 keeps the configuration and the daemons' logs to look at */
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", e->dir);
	if (getenv("KEEP_TMP"))
		fprintf(stderr, "# kept %s\n", e->dir);
	else if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", e->dir);
}

/* Starts billingd -c config --now NOW_ISO with the test database; stderr
 * goes to e->log. */
static pid_t daemon_start(struct env *e)
{
	char dburl[2048];
	const char *argv[] = {ts_bin("billingd"), "-c", e->config, "--now", NOW_ISO, NULL};
	const char *env[] = {dburl, NULL};
	pid_t pid;

	snprintf(dburl, sizeof(dburl), "DATABASE_URL=%s", e->url);
	pid = ts_spawn(argv, env, e->log);
	for (int i = 0; i < MAX_DAEMONS; i++)
		if (e->pids[i] <= 0) {
			e->pids[i] = pid;
			return pid;
		}
	ts_kill_pid(pid);
	fail_msg("more than %d daemons at once", MAX_DAEMONS);
	return pid;
}

static void forget(struct env *e, pid_t pid)
{
	for (int i = 0; i < MAX_DAEMONS; i++)
		if (e->pids[i] == pid)
			e->pids[i] = 0;
}

static void daemon_kill9(struct env *e, pid_t pid)
{
	ts_kill_pid(pid);
	forget(e, pid);
}

/* Sends sig and expects exit status 0 within timeout_ms; returns how long
 * the exit took. */
static long daemon_stop(struct env *e, pid_t pid, int sig, long timeout_ms)
{
	long t0 = ts_ms_now();
	int status;

	kill(pid, sig);
	status = ts_wait_pid(pid, timeout_ms);
	if (status == -1) {
		daemon_kill9(e, pid);
		fail_msg("billingd (pid %d) still running %ld ms after signal %d", (int)pid,
		         timeout_ms, sig);
	}
	forget(e, pid);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail_msg("billingd (pid %d) ended with status %d after signal %d", (int)pid, status,
		         sig);
	return ts_ms_now() - t0;
}

static void fake_post(struct env *e, const char *path, const char *json)
{
	char *resp = NULL;
	long code = ts_fakegw_post(&e->fake, path, json, &resp);

	if (code != 200)
		fail_msg("fake %s %s: %ld %s", path, json, code, resp);
	free(resp);
}

/* Requests the fake received at endpoint ("cc_query", ...). */
static long fake_requests(struct env *e, const char *endpoint)
{
	cJSON *l = ts_fakegw_ledger(&e->fake);
	long n = (long)cJSON_GetNumberValue(
	    cJSON_GetObjectItem(cJSON_GetObjectItem(l, "requests"), endpoint));

	cJSON_Delete(l);
	return n;
}

/* A count with one text parameter. */
static long count1(PGconn *db, const char *sql, const char *param)
{
	char err[512];
	const char *p[1] = {param};
	PGresult *r = db_query(db, sql, 1, p, err, sizeof(err));
	long n;

	if (!r)
		fail_msg("%s", err);
	n = (long)db_i64(r, 0, 0);
	PQclear(r);
	return n;
}

static const char *const plan_codes[] = {"weekly", "annual", "instalments"};

/* nsubs subscriptions (plans without a trial) over ncust customers, started
 * during the hour before NOW_ISO: each is due once at NOW_ISO. */
static void populate(struct env *e, int nsubs, int ncust)
{
	long now = now_unix();
	char id[32];

	for (int i = 0; i < ncust; i++) {
		snprintf(id, sizeof(id), "c%03d", i);
		ts_enrol(e->db, e->gw, id, NULL);
	}
	for (int i = 0; i < nsubs; i++) {
		snprintf(id, sizeof(id), "c%03d", i % ncust);
		ts_subscribe(e->db, id, plan_codes[i % 3], now - 3600 + (i * 7) % 3600);
	}
}

/* Subscriptions paid for period 0 with nothing open: when this reaches
 * nsubs, the work is done. */
static const char SQL_DONE[] =
    "SELECT count(*) FROM subscriptions s WHERE s.period = 1"
    "   AND NOT EXISTS (SELECT 1 FROM charges c WHERE c.subscription_id = s.id"
    "                    AND c.state IN ('pending', 'unknown'))";

static void wait_done(struct env *e, long nsubs, long timeout_ms)
{
	long got = ts_db_wait(e->url, SQL_DONE, nsubs, timeout_ms);

	if (got != nsubs)
		fail_msg("after %ld ms, %ld of %ld subscriptions are paid and settled", timeout_ms,
		         got, nsubs);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* No duplicate, nothing missed: every subscription paid exactly once, for
 * period 0, nothing pending or unknown; the gateway's orders are exactly our
 * succeeded charges (no mchOrderNo twice, same payOrderId and amount). */
static void verify(struct env *e, long nsubs)
{
	char err[512];
	PGresult *r;
	cJSON *ledger, *o;
	const char **mch;
	long theirs = 0, n = 0;

	assert_int_equal(ts_db_long(e->db, "SELECT count(*) FROM charges WHERE state IN "
	                                   "('pending', 'unknown')"),
	                 0);
	assert_int_equal(ts_db_long(e->db, "SELECT count(*) FROM subscriptions"), nsubs);
	assert_int_equal(ts_db_long(e->db,
	                            "SELECT count(*) FROM subscriptions s"
	                            " WHERE s.period <> 1 OR (SELECT count(*) FROM charges c"
	                            "   WHERE c.subscription_id = s.id AND c.state = 'succeeded'"
	                            "     AND c.period = 0) <> 1"),
	                 0);
	assert_int_equal(
	    ts_db_long(e->db, "SELECT count(*) FROM charges WHERE state = 'succeeded'"), nsubs);
	/* The outbox across the kills: one charge.succeeded event per succeeded
	 * charge, and none for anything else. */
	assert_int_equal(ts_db_long(e->db,
	                            "SELECT count(*) FROM charges c WHERE c.state = 'succeeded'"
	                            " AND (SELECT count(*) FROM events v"
	                            "       WHERE v.type = 'charge.succeeded'"
	                            "         AND v.body::jsonb #>> '{data,mch_order_no}'"
	                            "             = c.mch_order_no) <> 1"),
	                 0);
	assert_int_equal(
	    ts_db_long(e->db, "SELECT count(*) FROM events WHERE type = 'charge.succeeded'"),
	    nsubs);

	ledger = ts_fakegw_ledger(&e->fake);
	cJSON_ArrayForEach(o, cJSON_GetObjectItem(ledger, "orders")) theirs++;
	mch = calloc((size_t)theirs + 1, sizeof(*mch));
	assert_non_null(mch);
	cJSON_ArrayForEach(o, cJSON_GetObjectItem(ledger, "orders"))
	{
		const char *m = cJSON_GetStringValue(cJSON_GetObjectItem(o, "mchOrderNo"));
		const char *pay = cJSON_GetStringValue(cJSON_GetObjectItem(o, "payOrderId"));
		char amount[32];
		const char *p[3] = {m, pay, amount};

		if (strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(o, "payType")), "pay") != 0)
			continue;
		mch[n++] = m;
		snprintf(amount, sizeof(amount), "%.0f",
		         cJSON_GetNumberValue(cJSON_GetObjectItem(o, "amount")));
		r = db_query(e->db,
		             "SELECT 1 FROM charges WHERE mch_order_no = $1 AND pay_order_id = $2"
		             " AND amount_cents = $3::bigint AND state = 'succeeded'",
		             3, p, err, sizeof(err));
		assert_non_null(r);
		if (PQntuples(r) != 1)
			fail_msg(
			    "gateway order %s (%s, %s cents) is not a succeeded charge of ours",
			    pay, m, amount);
		PQclear(r);
	}
	qsort(mch, (size_t)n, sizeof(*mch), cmp_str);
	for (long i = 1; i < n; i++)
		if (strcmp(mch[i - 1], mch[i]) == 0)
			fail_msg("the gateway charged mchOrderNo %s twice", mch[i]);
	if (n != nsubs)
		fail_msg("the gateway has %ld charges for %ld subscriptions", n, nsubs);
	free(mch);
	cJSON_Delete(ledger);
}

/* ---- 1. kill -9 at random moments ---- */

static void kill_storm(const char *name, int dup_charge)
{
	struct env *e = &the_env;
	unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
	int kills = 20, mid_charge = 0;
	long queries;
	pid_t pid;

	env_start(e, name, NULL, FAST_CONFIG);
	populate(e, 1000, 100);
	print_message("# %s: seed %u\n", name, seed);
	fake_post(e, "faults", "{\"endpoint\":\"*\",\"kind\":\"latency\",\"rate\":1,\"ms\":20}");
	if (dup_charge)
		fake_post(e, "faults", "{\"endpoint\":\"*\",\"kind\":\"dup_charge\",\"rate\":1}");
	for (int i = 0; i < kills; i++) {
		char owner[32], started[48];

		pid = daemon_start(e);
		/* counted from its start line, so that a slow start (a loaded
		 * machine, the sanitizers) does not make the kills miss */
		snprintf(started, sizeof(started), ":%d once=false", (int)pid);
		ts_wait_log(e->log, started, 20000);
		ts_sleep_ms(50 + (long)(rand_r(&seed) % 351));
		daemon_kill9(e, pid);
		/* charges this process claimed and never finished */
		snprintf(owner, sizeof(owner), "%%:%d", (int)pid);
		if (count1(e->db,
		           "SELECT count(*) FROM charges WHERE state = 'pending'"
		           " AND lease_owner LIKE $1",
		           owner) > 0)
			mid_charge++;
	}
	/* The kills did land while charging, and work remains for the last
	 * daemon: abandoned leases to resolve once they expire. */
	assert_true(mid_charge >= kills / 2);
	pid = daemon_start(e);
	wait_done(e, 1000, 90000);
	daemon_stop(e, pid, SIGTERM, 5000);
	verify(e, 1000);
	/* every abandoned charge was resolved with cc_query */
	queries = fake_requests(e, "cc_query");
	print_message("# %s: %d of %d kills left charges pending; %ld cc_query, %ld proven "
	              "absent\n",
	              name, mid_charge, kills, queries,
	              ts_db_long(e->db, "SELECT count(*) FROM charges WHERE ret_msg ="
	                                " 'not found at the gateway'"));
	assert_true(queries >= mid_charge);
	env_stop(e);
}

static void test_kill9_storm(void **state)
{
	(void)state;
	kill_storm("daemon_kill", 0);
}

static void test_kill9_storm_dup_charge(void **state)
{
	(void)state;
	kill_storm("daemon_kill_dup", 1);
}

/* ---- 2. four daemons on one database ---- */

static void test_four_daemons(void **state)
{
	struct env *e = &the_env;
	pid_t pids[4];

	(void)state;
	env_start(e, "daemon_four", NULL, FAST_CONFIG);
	populate(e, 1000, 100);
	fake_post(e, "faults", "{\"endpoint\":\"*\",\"kind\":\"latency\",\"rate\":1,\"ms\":20}");
	for (int i = 0; i < 4; i++)
		pids[i] = daemon_start(e);
	wait_done(e, 1000, 60000);
	for (int i = 0; i < 4; i++) {
		char owner[32];

		daemon_stop(e, pids[i], SIGTERM, 5000);
		snprintf(owner, sizeof(owner), "billingd:%%:%d", (int)pids[i]);
		if (count1(e->db,
		           "SELECT count(*) FROM audit_log WHERE entity = 'charges'"
		           " AND new_state = 'pending' AND actor LIKE $1",
		           owner) == 0)
			fail_msg("daemon %d charged nothing", (int)pids[i]);
	}
	verify(e, 1000);
	env_stop(e);
}

/* ---- 3. PostgreSQL restarted mid-run ---- */

static int count_str(const char *s, const char *what)
{
	int n = 0;

	for (s = strstr(s, what); s; s = strstr(s + 1, what))
		n++;
	return n;
}

static void test_postgres_restart(void **state)
{
	struct env *e = &the_env;
	const char *pgtmp = getenv("PGTMP");
	char cmd[512], *log;
	pid_t pid;

	(void)state;
	if (!pgtmp)
		fail_msg("PGTMP is not set: run this through tests/run.sh");
	env_start(e, "daemon_pgrestart", NULL, FAST_CONFIG);
	populate(e, 1000, 100);
	fake_post(e, "faults", "{\"endpoint\":\"*\",\"kind\":\"latency\",\"rate\":1,\"ms\":20}");
	pid = daemon_start(e);
	assert_true(ts_db_wait(e->url,
	                       "SELECT least(count(*), 200) FROM charges"
	                       " WHERE state = 'succeeded'",
	                       200, 30000) == 200);
	snprintf(cmd, sizeof(cmd), "sh tests/pg.sh restart '%s' 1", pgtmp);
	assert_int_equal(system(cmd), 0);
	wait_done(e, 1000, 60000);
	daemon_stop(e, pid, SIGTERM, 5000);
	/* the loss and the return were logged, one line each */
	log = ts_read_file(e->log);
	assert_int_equal(count_str(log, "level=error event=database_lost server=127.0.0.1:"), 1);
	assert_int_equal(count_str(log, "level=info event=database_reconnected server=127.0.0.1:"),
	                 1);
	assert_int_equal(count_str(log, "event=database_down"), 0);
	free(log);
	PQreset(e->db);
	assert_int_equal(PQstatus(e->db), CONNECTION_OK);
	verify(e, 1000);
	env_stop(e);
}

/* A daemon started on a world of nsubs subscriptions (ncust customers)
 * whose every charge takes ms at the gateway; its pid. */
static pid_t start_slow_charges(struct env *e, const char *name, const char *config, int nsubs,
                                int ncust, int ms)
{
	char fault[128];

	env_start(e, name, NULL, config);
	populate(e, nsubs, ncust);
	snprintf(fault, sizeof(fault),
	         "{\"endpoint\":\"cc_purchasewithtoken\",\"kind\":\"latency\",\"rate\":1,"
	         "\"ms\":%d}",
	         ms);
	fake_post(e, "faults", fault);
	return daemon_start(e);
}

/* Until n charges have succeeded (20 s at most). */
static void wait_succeeded(struct env *e, int n)
{
	char sql[128];

	snprintf(sql, sizeof(sql),
	         "SELECT least(count(*), %d) FROM charges WHERE state = 'succeeded'", n);
	assert_int_equal(ts_db_wait(e->url, sql, n, 20000), n);
}

/* ---- 4. SIGTERM while charging ---- */

/* Charges take 200 ms at the gateway, 4 at a time: when SIGTERM comes, what
 * is in flight is finished (or left pending), nothing more is sent, and the
 * exit comes within the gateway timeout and a little. A second daemon then
 * resolves what was left. */
static void test_sigterm_while_charging(void **state)
{
	struct env *e = &the_env;
	long took, sent;
	pid_t pid;

	(void)state;
	pid = start_slow_charges(e, "daemon_sigterm", FAST_CONFIG, 300, 30, 200);
	wait_succeeded(e, 8);
	took = daemon_stop(e, pid, SIGTERM, 10000);
	if (took > 1000 + 2000)
		fail_msg("billingd took %ld ms to stop (gateway timeout 1000 ms)", took);
	ts_wait_log(e->log, "event=stopped", 0);
	/* What was in flight was finished and recorded: every order sent is a
	 * recorded outcome, nothing is left pending, and work remains. */
	sent = fake_requests(e, "cc_purchasewithtoken");
	assert_int_equal(sent, ts_db_long(e->db, "SELECT count(*) FROM charges"));
	assert_int_equal(ts_db_long(e->db, "SELECT count(*) FROM charges WHERE state = 'pending'"),
	                 0);
	assert_true(sent < 300);
	fake_post(e, "faults", "{\"clear\":true}");
	pid = daemon_start(e);
	wait_done(e, 300, 60000);
	daemon_stop(e, pid, SIGTERM, 5000);
	verify(e, 300);
	env_stop(e);
}

/* ---- a lease outlived by requests waiting for a connection ---- */

/* Charges are slow (100 ms) and queries fast, 2 requests in flight per
 * daemon. The first daemon must not claim more than it can send within its
 * lease: a second daemon would take over the expired leases, find those
 * orders absent at the gateway (not sent yet) and charge them again under a
 * new order number, while the first still sends the old one. */
static void test_lease_outlived_by_queue(void **state)
{
	struct env *e = &the_env;
	pid_t a, b;

	(void)state;
	a = start_slow_charges(e, "daemon_queue",
	                       FAST_CONFIG "gateway:\n  timeout_ms: 1000\n  max_in_flight: 2\n",
	                       300, 30, 100);
	assert_int_equal(ts_db_wait(e->url, "SELECT least(count(*), 4) FROM charges", 4, 20000), 4);
	b = daemon_start(e);
	wait_done(e, 300, 60000);
	daemon_stop(e, a, SIGTERM, 5000);
	daemon_stop(e, b, SIGTERM, 5000);
	verify(e, 300);
	env_stop(e);
}

/* ---- a dead daemon's charges in seconds, not a lease ---- */

/* A long lease, a gateway slower than a second, 64 requests in flight. */
#define LONG_LEASE_CONFIG                                                                          \
	"listen:\n  address: 127.0.0.1:0\n"                                                        \
	"gateway:\n  timeout_ms: 4000\n  max_in_flight: 64\n"                                      \
	"billing:\n  lease_seconds: 600\n  poll_interval_ms: 100\n"

/* The first daemon is killed -9 with 64 charges in flight, each of which
 * the gateway then pays. A second daemon resolves them all within the
 * gateway's timeout and 10 s of the kill, not at the lease's end ten
 * minutes later: the first's owner lock went with its process. None is
 * touched before an answer could no longer be in flight (the claim's time,
 * the 4 s timeout and the 5 s margin), and each is paid exactly once. */
static void test_dead_owner_resolved_in_seconds(void **state)
{
	struct env *e = &the_env;
	long killed, took;
	pid_t a;

	(void)state;
	a = start_slow_charges(e, "daemon_dead_owner", LONG_LEASE_CONFIG, 64, 64, 3000);
	for (long t0 = ts_ms_now(); fake_requests(e, "cc_purchasewithtoken") < 64; ts_sleep_ms(20))
		if (ts_ms_now() - t0 > 20000)
			fail_msg("64 requests did not reach the gateway in 20 s");
	ts_sleep_ms(200); /* their bodies too */
	daemon_kill9(e, a);
	killed = ts_ms_now();
	assert_int_equal(ts_db_long(e->db, "SELECT count(*) FROM charges WHERE state = 'pending'"),
	                 64);
	daemon_start(e);
	wait_done(e, 64, 4000 + 10000);
	took = ts_ms_now() - killed;
	print_message("# 64 charges of a killed daemon resolved %ld ms after the kill\n", took);
	if (took > 4000 + 10000)
		fail_msg("resolved %ld ms after the kill (timeout 4000 ms, lease 600 s)", took);
	assert_int_equal(ts_db_long(e->db, "SELECT count(*) FROM charges WHERE attempt = 1"
	                                   " AND state = 'succeeded'"
	                                   " AND updated_at >= created_at + interval '9 s'"),
	                 64);
	assert_true(fake_requests(e, "cc_query") >= 64);
	verify(e, 64);
	env_stop(e);
}

/* The owner lock's connection is cut (pg_terminate_backend), and the test
 * holds the lock in its place: the daemon claims nothing more, so that no
 * order reaches the gateway while it could look dead; once the lock is free
 * again it takes it back and charging resumes. */
static void test_owner_lock_lost(void **state)
{
	struct env *e = &the_env;
	char name[64], owner[96], err[512];
	const char *p[1] = {name};
	long before, after;
	PGconn *hold;
	PGresult *r;
	pid_t a;

	(void)state;
	a = start_slow_charges(e, "daemon_owner_lock", FAST_CONFIG, 300, 30, 100);
	wait_succeeded(e, 8);
	hold = ts_db_connect(e->url);
	snprintf(name, sizeof(name), "billingd:%%:%d/lock", (int)a);
	r = db_query(hold,
	             "SELECT pg_terminate_backend(pid), left(application_name, -5)"
	             "  FROM pg_stat_activity WHERE application_name LIKE $1",
	             1, p, err, sizeof(err));
	assert_non_null(r);
	assert_int_equal(PQntuples(r), 1);
	assert_string_equal(db_str(r, 0, 0), "t");
	snprintf(owner, sizeof(owner), "%s", db_str(r, 0, 1));
	PQclear(r);
	p[0] = owner;
	/* waits for the backend's end; the daemon tries again only after 1 s */
	assert_int_equal(db_exec(hold,
	                         "SELECT pg_advisory_lock(" OWNER_LOCK_CLASS ", hashtext($1))", 1,
	                         p, err, sizeof(err)),
	                 0);
	ts_wait_log(e->log, "event=owner_lock_lost", 5000);
	ts_sleep_ms(1500); /* what was in flight is answered (timeout 1 s) */
	before = fake_requests(e, "cc_purchasewithtoken");
	ts_sleep_ms(3000);
	after = fake_requests(e, "cc_purchasewithtoken");
	if (after != before)
		fail_msg("%ld requests sent without the owner lock", after - before);
	assert_true(ts_db_long(e->db, SQL_DONE) < 300);
	assert_int_equal(
	    db_exec(hold, "SELECT pg_advisory_unlock_all()", 0, NULL, err, sizeof(err)), 0);
	for (long t0 = ts_ms_now(); fake_requests(e, "cc_purchasewithtoken") == after;
	     ts_sleep_ms(50))
		if (ts_ms_now() - t0 > 10000)
			fail_msg("no charge sent 10 s after the owner lock was free again");
	wait_done(e, 300, 60000);
	daemon_stop(e, a, SIGTERM, 5000);
	PQfinish(hold);
	verify(e, 300);
	env_stop(e);
}

/* ---- 5. the logs ---- */

/* One logfmt line per charge outcome, with subscription, mch_order_no,
 * amount and outcome; every succeeded charge has exactly one success line
 * with its own values; every line of stderr is logfmt. Faults make some
 * outcomes unknown, resolved later (charge_resolved lines). */
static void test_log_lines(void **state)
{
	struct env *e = &the_env;
	char *log, *line, *save = NULL, err[512], **succ;
	PGresult *r;
	long lines = 0, nsucc = 0;
	pid_t pid;

	(void)state;
	env_start(e, "daemon_logs", NULL, FAST_CONFIG);
	populate(e, 200, 20);
	fake_post(e, "faults",
	          "{\"endpoint\":\"cc_purchasewithtoken\",\"kind\":\"drop_after\",\"rate\":0.1}");
	fake_post(e, "decline", "{\"customerId\":\"c007\",\"count\":100}");
	pid = daemon_start(e);
	assert_int_equal(ts_db_wait(e->url,
	                            "SELECT (SELECT count(*) FROM charges WHERE state IN"
	                            " ('pending', 'unknown')) + (SELECT count(*) FROM"
	                            " subscriptions WHERE period = 0 AND customer_id <> 'c007')",
	                            0, 30000),
	                 0);
	daemon_stop(e, pid, SIGTERM, 5000);

	log = ts_read_file(e->log);
	assert_null(strstr(log, TS_KEY));
	succ = calloc(strlen(log) / 64 + 1, sizeof(*succ)); /* a line is longer than 64 */
	assert_non_null(succ);
	for (line = strtok_r(log, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char ev[32], sub[32], mch[40], amount[32], outcome[32], lvl[16];
		const char *p[3] = {mch, sub, amount};

		if (ts_logfmt_get(line, "ts", ev, sizeof(ev)) < 0 ||
		    ts_logfmt_get(line, "level", lvl, sizeof(lvl)) < 0 ||
		    ts_logfmt_get(line, "event", ev, sizeof(ev)) < 0)
			fail_msg("not a logfmt line: %s", line);
		if (strcmp(ev, "charge") != 0 && strcmp(ev, "charge_resolved") != 0)
			continue;
		if (ts_logfmt_get(line, "subscription", sub, sizeof(sub)) < 0 ||
		    ts_logfmt_get(line, "mch_order_no", mch, sizeof(mch)) < 0 ||
		    ts_logfmt_get(line, "amount", amount, sizeof(amount)) < 0 ||
		    ts_logfmt_get(line, "outcome", outcome, sizeof(outcome)) < 0)
			fail_msg(
			    "charge line without subscription, mch_order_no, amount or outcome:"
			    " %s",
			    line);
		lines++;
		/* the line names the charge as the database has it */
		if (count1(e->db, "SELECT count(*) FROM charges WHERE mch_order_no = $1", mch) != 1)
			fail_msg("log line for an unknown order: %s", line);
		r = db_query(e->db,
		             "SELECT state FROM charges WHERE mch_order_no = $1"
		             " AND subscription_id = $2::bigint AND amount_cents = $3::bigint",
		             3, p, err, sizeof(err));
		assert_non_null(r);
		if (PQntuples(r) != 1)
			fail_msg("log line disagrees with the database: %s", line);
		if (strcmp(outcome, "success") == 0) {
			if (strcmp(db_str(r, 0, 0), "succeeded") != 0)
				fail_msg("success logged for a %s charge: %s", db_str(r, 0, 0),
				         line);
			succ[nsucc++] = strdup(mch);
		}
		PQclear(r);
	}
	free(log);
	/* exactly one success line per succeeded charge: each names a succeeded
	 * row, no row twice, as many lines as rows */
	qsort(succ, (size_t)nsucc, sizeof(*succ), cmp_str);
	for (long i = 1; i < nsucc; i++)
		if (strcmp(succ[i - 1], succ[i]) == 0)
			fail_msg("two success lines for %s", succ[i]);
	assert_int_equal(nsucc, ts_db_long(e->db, "SELECT count(*) FROM charges"
	                                          " WHERE state = 'succeeded'"));
	assert_true(nsucc >= 190);
	for (long i = 0; i < nsucc; i++)
		free(succ[i]);
	free(succ);
	/* every attempt has at least its outcome line */
	assert_true(lines >= ts_db_long(e->db, "SELECT count(*) FROM charges"));
	assert_true(ts_db_long(e->db, "SELECT count(*) FROM charges WHERE state = 'failed'") > 0);
	env_stop(e);
}

/* Runs billingd with the given config and environment to its exit;
 * returns its exit status and leaves stderr in e->log (overwritten). */
static int run_to_exit(struct env *e, const char *config, const char *const env[],
                       const char *extra)
{
	const char *argv[] = {ts_bin("billingd"), "-c", config, "--now", NOW_ISO, extra, NULL};
	pid_t pid;
	int status;

	unlink(e->log);
	pid = ts_spawn(argv, env, e->log);
	status = ts_wait_pid(pid, 30000);
	if (status == -1) {
		ts_kill_pid(pid);
		fail_msg("billingd %s did not exit", config);
	}
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
}

static void assert_log_clean(struct env *e)
{
	char *log = ts_read_file(e->log);

	if (strstr(log, TS_KEY))
		fail_msg("the merchant key is in billingd's stderr: %s", log);
	free(log);
}

/* The same after a gateway failure, which the log shows (what). */
static void assert_log_clean_after(struct env *e, const char *what)
{
	char *log = ts_read_file(e->log);

	if (!strstr(log, what))
		fail_msg("no '%s' in billingd's stderr: %s", what, log);
	free(log);
	assert_log_clean(e);
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

/* The merchant key appears in no output: bad configurations (the key in
 * the environment, in a misplaced key, in a readable file, with a lease too
 * short), the gateway refusing our signature, the gateway unreachable. */
static void test_key_never_logged(void **state)
{
	struct env *e = &the_env;
	struct ts_fakegw other;
	char path[2048], keyfile[2048], dburl[2048], yaml[1024];
	const char *with_key[] = {dburl, "IOTPAY_MERCHANT_KEY=" TS_KEY, NULL};
	const char *db_only[] = {dburl, NULL};

	(void)state;
	env_start(e, "daemon_key", NULL, FAST_CONFIG);
	populate(e, 20, 5);
	snprintf(dburl, sizeof(dburl), "DATABASE_URL=%s", e->url);
	snprintf(keyfile, sizeof(keyfile), "%s/merchant.key", e->dir);

	/* broken YAML, key in the environment */
	snprintf(path, sizeof(path), "%s/broken.yaml", e->dir);
	write_file(path, "gateway:\n  mch_id: [\n");
	assert_int_equal(run_to_exit(e, path, with_key, "--once"), 2);
	assert_log_clean(e);
	/* the key itself where the key file's path goes, or under a wrong key */
	write_file(path,
	           "gateway:\n  mch_id: \"1\"\n  job_no: j\n  merchant_key_file: " TS_KEY "\n");
	assert_int_equal(run_to_exit(e, path, db_only, "--once"), 2);
	assert_log_clean(e);
	write_file(path, "gateway:\n  mch_id: \"1\"\n  job_no: j\n  merchant_key: " TS_KEY "\n");
	assert_int_equal(run_to_exit(e, path, db_only, "--once"), 2);
	assert_log_clean(e);
	write_file(path, "gateway:\n  timeout_ms: " TS_KEY "\n");
	assert_int_equal(run_to_exit(e, path, db_only, "--once"), 2);
	assert_log_clean(e);
	/* a lease too short, with the key in the environment */
	snprintf(yaml, sizeof(yaml),
	         "gateway:\n  mch_id: \"1\"\n  job_no: j\n  timeout_ms: 9000\n"
	         "billing:\n  lease_seconds: 6\n");
	write_file(path, yaml);
	assert_int_equal(run_to_exit(e, path, with_key, "--once"), 2);
	assert_log_clean(e);
	/* the key file readable by others */
	chmod(keyfile, 0644);
	assert_int_equal(run_to_exit(e, e->config, db_only, "--once"), 2);
	assert_log_clean(e);
	chmod(keyfile, 0600);

	/* a gateway that does not know our key: refused at the start, before
	 * any charge (test_operations.c has the rest) */
	ts_fakegw_start(&other, "--key OTHERKEY0123456789");
	snprintf(path, sizeof(path), "%s", ts_write_config(e->dir, e->url, &other, FAST_CONFIG));
	assert_int_equal(run_to_exit(e, path, db_only, "--once"), 2);
	ts_fakegw_stop(&other);
	assert_log_clean_after(e, "sign error");
	assert_int_equal(ts_db_long(e->db, "SELECT count(*) FROM charges"), 0);
	/* a gateway that is not there, and one answering garbage, each with
	 * fresh work due */
	ts_subscribe(e->db, "c000", "weekly", now_unix() - 60);
	snprintf(path, sizeof(path), "%s", ts_write_config(e->dir, e->url, NULL, FAST_CONFIG));
	run_to_exit(e, path, with_key, "--once");
	assert_log_clean_after(e, "cannot connect");
	ts_subscribe(e->db, "c001", "weekly", now_unix() - 60);
	fake_post(e, "faults", "{\"endpoint\":\"*\",\"kind\":\"garbage\",\"rate\":1}");
	snprintf(path, sizeof(path), "%s", ts_write_config(e->dir, e->url, &e->fake, FAST_CONFIG));
	run_to_exit(e, path, with_key, "--once");
	assert_log_clean_after(e, "event=charge_resolved");
	env_stop(e);
}

/* /proc/PID/<name> of a running process, whole (it may hold NULs). */
static size_t read_proc(pid_t pid, const char *name, char *buf, size_t len)
{
	char path[64];
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, name);
	f = fopen(path, "r");
	assert_non_null(f);
	n = fread(buf, 1, len - 1, f);
	fclose(f);
	buf[n] = '\0';
	return n;
}

/* A running billingd holds the key in memory only: not in its environment
 * (which /proc and child processes see), and never in a core dump. */
static void test_key_hygiene(void **state)
{
	struct env *e = &the_env;
	char dburl[2048], buf[16384];
	const char *argv[] = {ts_bin("billingd"), "-c", NULL, "--now", NOW_ISO, NULL};
	const char *env[] = {dburl, "IOTPAY_MERCHANT_KEY=" TS_KEY, NULL};
	const char *core;
	size_t n;
	pid_t pid;

	(void)state;
	env_start(e, "daemon_key_hygiene", NULL, FAST_CONFIG);
	argv[2] = e->config;
	snprintf(dburl, sizeof(dburl), "DATABASE_URL=%s", e->url);
	pid = ts_spawn(argv, env, e->log);
	e->pids[0] = pid;
	ts_wait_log(e->log, "event=started", 10000);
	n = read_proc(pid, "environ", buf, sizeof(buf));
	assert_true(n > 0);
	assert_null(memmem(buf, n, TS_KEY, strlen(TS_KEY)));
	assert_null(memmem(buf, n, "IOTPAY_MERCHANT_KEY=T", 21));
	read_proc(pid, "limits", buf, sizeof(buf));
	core = strstr(buf, "Max core file size");
	assert_non_null(core);
	if (strncmp(core + 26, "0                    0 ", 23) != 0)
		fail_msg("core dumps allowed: %.60s", core);
	daemon_stop(e, pid, SIGTERM, 5000);
	env_stop(e);
}

/* ---- 6. an old schema, the database down ---- */

static void test_old_schema_and_database_down(void **state)
{
	struct env *e = &the_env;
	char dburl[2048], err[512], *log;
	const char *env[] = {dburl, NULL};

	(void)state;
	env_start(e, "daemon_schema", NULL, FAST_CONFIG);
	/* a database where no migration ran */
	if (db_exec(e->db, "SET client_min_messages = warning", 0, NULL, err, sizeof(err)) < 0 ||
	    db_exec(e->db, "DROP SCHEMA public CASCADE", 0, NULL, err, sizeof(err)) < 0 ||
	    db_exec(e->db, "CREATE SCHEMA public", 0, NULL, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	snprintf(dburl, sizeof(dburl), "DATABASE_URL=%s", e->url);
	assert_int_equal(run_to_exit(e, e->config, env, NULL), 1);
	log = ts_read_file(e->log);
	if (!strstr(log, "billctl migrate"))
		fail_msg("billingd does not say to run billctl migrate: %s", log);
	free(log);
	assert_int_equal(run_to_exit(e, e->config, env, "--once"), 1);
	log = ts_read_file(e->log);
	assert_non_null(strstr(log, "billctl migrate"));
	free(log);

	/* nothing listens on port 9 */
	snprintf(dburl, sizeof(dburl),
	         "DATABASE_URL=postgresql://billing:secretpw@127.0.0.1:9/billing");
	assert_int_equal(run_to_exit(e, e->config, env, "--once"), 1);
	log = ts_read_file(e->log);
	if (strchr(log, '\n') != log + strlen(log) - 1)
		fail_msg("not one line: %s", log);
	assert_null(strstr(log, "secretpw"));
	assert_non_null(strstr(log, "database"));
	free(log);
	env_stop(e);
}

/* ---- 7. daemons never write plans ---- */

/* A copy of plans/ in e->dir/name with monthly's 2900 cents made amount;
 * returns a configuration naming it (static buffer). */
static const char *config_with_plans(struct env *e, const char *name, const char *amount)
{
	static char config[512];
	char plans[1024], extra[1536], cmd[2048], sub[1000], *text, *at;

	snprintf(sub, sizeof(sub), "%.400s/%s", e->dir, name);
	assert_int_equal(mkdir(sub, 0700), 0);
	snprintf(plans, sizeof(plans), "%s/plans", sub);
	snprintf(cmd, sizeof(cmd), "cp -r plans '%s'", plans);
	assert_int_equal(system(cmd), 0);
	snprintf(cmd, sizeof(cmd), "%s/monthly.yaml", plans);
	text = ts_read_file(cmd);
	at = strstr(text, "amount: 2900");
	assert_non_null(at);
	memcpy(at + 8, amount, 4);
	write_file(cmd, text);
	free(text);
	snprintf(extra, sizeof(extra), FAST_CONFIG "plans_dir: %s\n", plans);
	snprintf(config, sizeof(config), "%s", ts_write_config(sub, e->url, &e->fake, extra));
	return config;
}

#define PLAN_ROWS "SELECT count(*) * 100000 + sum(amount_cents) FROM plans"

/* Two hosts with different plan files (monthly at 31.00 and at 29.00), each
 * started and reloaded twice: no plan row is written, the price stays. */
static void test_daemons_never_write_plans(void **state)
{
	struct env *e = &the_env;
	char a[512], b[512], log_a[sizeof(e->log)], log_b[sizeof(e->log)], *log;
	long rows;
	pid_t pa, pb;

	(void)state;
	env_start(e, "daemon_plans", NULL, FAST_CONFIG);
	rows = ts_db_long(e->db, PLAN_ROWS);
	snprintf(a, sizeof(a), "%s", config_with_plans(e, "a", "3100"));
	snprintf(b, sizeof(b), "%s", config_with_plans(e, "b", "2900"));
	snprintf(log_a, sizeof(log_a), "%.400s/a.log", e->dir);
	snprintf(log_b, sizeof(log_b), "%.400s/b.log", e->dir);
	snprintf(e->config, sizeof(e->config), "%s", a);
	snprintf(e->log, sizeof(e->log), "%s", log_a);
	pa = daemon_start(e);
	snprintf(e->config, sizeof(e->config), "%s", b);
	snprintf(e->log, sizeof(e->log), "%s", log_b);
	pb = daemon_start(e);
	ts_wait_log(log_a, "event=started", 20000);
	ts_wait_log(log_b, "event=started", 20000);
	for (int i = 0; i < 2; i++) {
		kill(pa, SIGHUP);
		kill(pb, SIGHUP);
		ts_sleep_ms(300);
	}
	ts_wait_log(log_a, "event=reloaded", 5000);
	ts_wait_log(log_b, "event=reloaded", 5000);
	daemon_stop(e, pa, SIGTERM, 5000);
	daemon_stop(e, pb, SIGTERM, 5000);
	assert_int_equal(ts_db_long(e->db, PLAN_ROWS), rows);
	assert_int_equal(ts_db_long(e->db, "SELECT amount_cents FROM plans WHERE code = 'monthly'"),
	                 2900);
	/* the host whose files differ says so; the other does not */
	log = ts_read_file(log_a);
	if (!strstr(log, "event=plans_differ"))
		fail_msg("differing plan files not said: %s", log);
	free(log);
	log = ts_read_file(log_b);
	if (strstr(log, "plans_differ"))
		fail_msg("plan files said to differ when they do not: %s", log);
	free(log);
	env_stop(e);
}

/* A database without plan rows: billingd refuses to start, saying how. */
static void test_no_plans_no_start(void **state)
{
	struct env *e = &the_env;
	char dburl[2048], err[512], *log;
	const char *env[] = {dburl, NULL};

	(void)state;
	env_start(e, "daemon_noplans", NULL, FAST_CONFIG);
	if (db_exec(e->db, "DELETE FROM plans", 0, NULL, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	snprintf(dburl, sizeof(dburl), "DATABASE_URL=%s", e->url);
	assert_int_equal(run_to_exit(e, e->config, env, "--once"), 1);
	log = ts_read_file(e->log);
	if (!strstr(log, "billctl plans sync"))
		fail_msg("billingd does not say to run billctl plans sync: %s", log);
	free(log);
	assert_int_equal(ts_db_long(e->db, "SELECT count(*) FROM plans"), 0);
	env_stop(e);
}

static int teardown(void **state)
{
	(void)state;
	if (live)
		env_stop(live);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(test_old_schema_and_database_down, teardown),
	    cmocka_unit_test_teardown(test_daemons_never_write_plans, teardown),
	    cmocka_unit_test_teardown(test_no_plans_no_start, teardown),
	    cmocka_unit_test_teardown(test_key_never_logged, teardown),
	    cmocka_unit_test_teardown(test_key_hygiene, teardown),
	    cmocka_unit_test_teardown(test_log_lines, teardown),
	    cmocka_unit_test_teardown(test_sigterm_while_charging, teardown),
	    cmocka_unit_test_teardown(test_lease_outlived_by_queue, teardown),
	    cmocka_unit_test_teardown(test_dead_owner_resolved_in_seconds, teardown),
	    cmocka_unit_test_teardown(test_owner_lock_lost, teardown),
	    cmocka_unit_test_teardown(test_four_daemons, teardown),
	    cmocka_unit_test_teardown(test_kill9_storm, teardown),
	    cmocka_unit_test_teardown(test_kill9_storm_dup_charge, teardown),
	    cmocka_unit_test_teardown(test_postgres_restart, teardown),
	};
	if (getenv("TEST_FILTER"))
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
