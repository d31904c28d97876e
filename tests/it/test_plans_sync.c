/* test_plans_sync.c: plan files synced into versioned rows of the real
 * PostgreSQL: new versions only for changed terms, old versions kept, one
 * transaction per sync, concurrent syncs serialised; billctl plans sync and
 * its --dry-run. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "db.h"
#include "plans.h"
#include "support.h"

static const char *url;
static PGconn *db;

static struct plan *find(struct plan *p, int n, const char *code)
{
	for (int i = 0; i < n; i++)
		if (strcmp(p[i].code, code) == 0)
			return &p[i];
	fail_msg("no plan %s", code);
	return NULL;
}

static void sync_ok(const struct plan *p, int n, int want_created)
{
	char err[512];
	int created = -1;

	if (plans_sync(db, p, n, &created, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	assert_int_equal(created, want_created);
}

/* Runs in order: each test starts from the rows the previous one left. */
static void test_first_sync_then_nothing(void **state)
{
	struct plan *p, got;
	int n, loaded = 0, created = -1;
	char err[512];

	(void)state;
	if (plans_sync_dir(db, "plans", &loaded, &created, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	assert_int_equal(loaded, 4);
	assert_int_equal(created, 4);
	assert_int_equal(ts_db_long(db, "SELECT count(*) FROM plans WHERE version = 1"), 4);

	if (plans_sync_dir(db, "plans", &loaded, &created, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	assert_int_equal(created, 0);
	assert_int_equal(ts_db_long(db, "SELECT count(*) FROM plans"), 4);

	/* What was stored reads back as the file said. */
	if (plans_load_dir("plans", &p, &n, err, sizeof(err)) < 0 ||
	    plans_get_current(db, "monthly", &got, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	assert_true(got.id > 0);
	assert_int_equal(got.version, 1);
	got.id = 0;
	got.version = 0;
	assert_memory_equal(&got, find(p, n, "monthly"), sizeof(got));
	if (plans_get_current(db, "instalments", &got, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	assert_int_equal(got.cycles, 12);
	assert_int_equal(ts_db_long(db, "SELECT count(*) FROM plans WHERE code = 'monthly' AND "
	                                "cycles IS NULL AND retry_schedule = '{1d,3d,7d}'"),
	                 1);
	free(p);
}

/* A changed amount makes version 2; version 1 stays, and so does the
 * subscription sold on it. */
static void test_changed_amount_makes_v2(void **state)
{
	struct plan *p, v1, v2, *list;
	int n, nlist;
	char err[512];

	(void)state;
	if (plans_load_dir("plans", &p, &n, err, sizeof(err)) < 0 ||
	    plans_get_current(db, "monthly", &v1, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	ts_db_long(db, "INSERT INTO customers (customer_id, state) VALUES ('c1', 'bound')");
	ts_db_long(db, "INSERT INTO subscriptions (customer_id, plan_id, state, anchor) SELECT "
	               "'c1', id, 'active', now() FROM plans WHERE code = 'monthly' RETURNING id");

	find(p, n, "monthly")->amount = 3100;
	sync_ok(p, n, 1);
	sync_ok(p, n, 0);

	if (plans_get_current(db, "monthly", &v2, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	assert_int_equal(v2.version, 2);
	assert_int_equal(v2.amount, 3100);
	assert_true(v2.id != v1.id);
	if (plans_get(db, v1.id, &v1, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	assert_int_equal(v1.version, 1);
	assert_int_equal(v1.amount, 2900);
	assert_int_equal(ts_db_long(db, "SELECT p.amount_cents FROM subscriptions s "
	                                "JOIN plans p ON p.id = s.plan_id"),
	                 2900);

	if (plans_list(db, &list, &nlist, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	assert_int_equal(nlist, 4);
	assert_string_equal(list[0].code, "annual");
	assert_string_equal(list[2].code, "monthly");
	assert_int_equal(list[2].version, 2);
	assert_int_equal(list[2].amount, 3100);
	free(list);

	/* Back to the old terms: a new version again (rows never change). */
	find(p, n, "monthly")->amount = 2900;
	sync_ok(p, n, 1);
	if (plans_get_current(db, "monthly", &v2, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	assert_int_equal(v2.version, 3);
	free(p);
}

/* Comments, key order and quoting are not terms: no new version. */
static void test_reformatted_file_makes_nothing(void **state)
{
	char dir[] = "/tmp/test_plans_sync.XXXXXX", path[128], err[512];
	int loaded, created = -1;
	FILE *f;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/monthly.yaml", dir);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs("# reordered and reformatted\n"
	      "retry: {on_exhausted: past_due, schedule: [1d, 3d, 7d]}\n"
	      "name: \"Pro (monthly)\"\n"
	      "code: monthly\n"
	      "currency: 'CAD'\n"
	      "interval: month\n"
	      "interval_count: 1\n"
	      "amount: 2900\n"
	      "trial_days: 14\n",
	      f);
	fclose(f);
	if (plans_sync_dir(db, dir, &loaded, &created, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	assert_int_equal(loaded, 1);
	assert_int_equal(created, 0);
	remove(path);
	rmdir(dir);
}

static void test_unknown(void **state)
{
	struct plan p;
	char err[512];

	(void)state;
	assert_int_equal(plans_get_current(db, "gold", &p, err, sizeof(err)), -1);
	assert_string_equal(err, "unknown plan 'gold'");
	assert_int_equal(plans_get(db, 999999, &p, err, sizeof(err)), -1);
	assert_string_equal(err, "unknown plan id 999999");
}

/* One transaction: a plan the database refuses leaves no row of the others. */
static void test_sync_is_all_or_nothing(void **state)
{
	struct plan *p;
	int n, created = -1;
	char err[512];
	long before = ts_db_long(db, "SELECT count(*) FROM plans");

	(void)state;
	if (plans_load_dir("plans", &p, &n, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	p[0].amount += 1;                /* annual: would be a new version */
	strcpy(p[n - 1].code, "Weekly"); /* refused by the table's CHECK */
	assert_int_equal(plans_sync(db, p, n, &created, err, sizeof(err)), -1);
	assert_int_equal(created, 0);
	assert_non_null(strstr(err, "plan 'Weekly': database: "));
	assert_int_equal(ts_db_long(db, "SELECT count(*) FROM plans"), before);
	assert_int_equal(PQtransactionStatus(db), PQTRANS_IDLE);
	free(p);
}

struct racer {
	struct plan *p;
	int n, created, rc;
	char err[512];
};

static void *race(void *arg)
{
	struct racer *r = arg;
	PGconn *c = ts_db_connect(url);

	r->rc = plans_sync(c, r->p, r->n, &r->created, r->err, sizeof(r->err));
	PQfinish(c);
	return NULL;
}

/* Several daemons starting at once with the same changed files: exactly one
 * new version, and no sync fails on the (code, version) key. */
static void test_concurrent_syncs(void **state)
{
	struct plan *p;
	struct racer r[4];
	pthread_t th[4];
	int n, total = 0;
	char err[512];

	(void)state;
	if (plans_load_dir("plans", &p, &n, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	for (int i = 0; i < n; i++)
		p[i].amount += 100;
	for (int i = 0; i < 4; i++) {
		r[i] = (struct racer){.p = p, .n = n};
		assert_int_equal(pthread_create(&th[i], NULL, race, &r[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		if (r[i].rc < 0)
			fail_msg("%s", r[i].err);
		total += r[i].created;
	}
	assert_int_equal(total, n);
	assert_int_equal(ts_db_long(db, "SELECT count(*) FROM (SELECT code FROM plans "
	                                "GROUP BY code HAVING count(*) <> max(version)) x"),
	                 0);
	free(p);
}

/* Runs a shell command; its exit status, and stdout+stderr into out. */
static int run(char *out, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int run(char *out, size_t len, const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;
	FILE *f;
	size_t got;
	int status;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	f = popen(cmd, "r");
	assert_non_null(f);
	got = fread(out, 1, len - 1, f);
	out[got] = '\0';
	status = pclose(f);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* billctl plans sync|list, text and JSON, against a database of its own. */
static void test_billctl_plans(void **state)
{
	char dir[] = "/tmp/test_plans_cli.XXXXXX", dburl[512], bin[PATH_MAX], cfg[512];
	char out[8192], path[600], admin[512];
	cJSON *list, *monthly;
	FILE *f;

	(void)state;
	assert_non_null(mkdtemp(dir));
	assert_non_null(realpath(ts_bin("billctl"), bin));
	snprintf(dburl, sizeof(dburl), "%s", ts_db_new("plans_cli"));
	snprintf(cfg, sizeof(cfg), "%s", ts_write_config(dir, dburl, NULL, NULL));
	/* The environment's DATABASE_URL (the test cluster's) would override it. */
	snprintf(admin, sizeof(admin), "%s", getenv("DATABASE_URL") ? getenv("DATABASE_URL") : "");
	setenv("DATABASE_URL", dburl, 1);

	assert_int_equal(run(out, sizeof(out), "%s -c %s plans sync 2>&1", bin, cfg), 0);
	assert_string_equal(out, "plans: 4 loaded, 4 new versions\n");
	assert_int_equal(run(out, sizeof(out), "%s -c %s --json plans sync 2>&1", bin, cfg), 0);
	assert_string_equal(out, "{\"loaded\":4,\"created\":0}\n");

	assert_int_equal(run(out, sizeof(out), "%s -c %s plans list 2>&1", bin, cfg), 0);
	assert_string_equal(
	    out, "CODE         VERSION  NAME                                   AMOUNT  INTERVAL "
	         "   TRIAL  CYCLES  RETRY\n"
	         "annual             1  Pro (annual)                           290.00  1 year   "
	         "       -       -  1d,3d,7d,14d -> cancel\n"
	         "instalments        1  Equipment, 12 monthly instalments      125.00  1 month  "
	         "       -      12  2d,5d,10d -> past_due\n"
	         "monthly            1  Pro (monthly)                           29.00  1 month  "
	         "     14d       -  1d,3d,7d -> past_due\n"
	         "weekly             1  Meal kit (weekly)                       64.50  1 week   "
	         "       -       -  12h,1d -> pause\n");

	assert_int_equal(run(out, sizeof(out), "%s -c %s --json plans list 2>&1", bin, cfg), 0);
	list = cJSON_Parse(out);
	assert_non_null(list);
	assert_int_equal(cJSON_GetArraySize(list), 4);
	monthly = cJSON_GetArrayItem(list, 2);
	assert_string_equal(cJSON_GetObjectItem(monthly, "code")->valuestring, "monthly");
	assert_int_equal(cJSON_GetObjectItem(monthly, "version")->valueint, 1);
	assert_int_equal(cJSON_GetObjectItem(monthly, "amount_cents")->valueint, 2900);
	assert_string_equal(cJSON_GetObjectItem(monthly, "amount")->valuestring, "29.00");
	assert_string_equal(cJSON_GetObjectItem(monthly, "interval")->valuestring, "month");
	assert_int_equal(cJSON_GetObjectItem(monthly, "trial_days")->valueint, 14);
	assert_true(cJSON_IsNull(cJSON_GetObjectItem(monthly, "cycles")));
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(monthly, "retry")), 3);
	assert_string_equal(cJSON_GetObjectItem(monthly, "on_exhausted")->valuestring, "past_due");
	cJSON_Delete(list);

	assert_int_equal(run(out, sizeof(out), "%s -c %s plans frobnicate 2>&1", bin, cfg), 2);
	assert_string_equal(out, "billctl: usage: billctl plans sync [--dry-run] | list\n");

	/* A bad plan file: one line naming file and line, exit 1, nothing stored.
	 * The config's plans_dir is relative: to the file's directory, not to
	 * the working directory (/). */
	snprintf(path, sizeof(path), "%s/plans", dir);
	assert_int_equal(mkdir(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/plans/gold.yaml", dir);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs("code: gold\nname: Gold\namount: -5\ncurrency: CAD\ninterval: month\n"
	      "interval_count: 1\n",
	      f);
	fclose(f);
	snprintf(cfg, sizeof(cfg), "%s", ts_write_config(dir, dburl, NULL, "plans_dir: plans\n"));
	assert_int_equal(run(out, sizeof(out), "cd / && %s -c %s plans sync 2>&1", bin, cfg), 1);
	snprintf(path, sizeof(path),
	         "billctl: %s/plans/gold.yaml:3: amount: must be a positive integer (cents) up to "
	         "2147483647, got '-5'\n",
	         dir);
	assert_string_equal(out, path);
	assert_int_equal(run(out, sizeof(out), "rm -r %s", dir), 0);
	setenv("DATABASE_URL", admin, 1);
}

/* plans sync --dry-run: the new plans, new versions and price changes a
 * sync would make, and nothing written; then the sync makes exactly them. */
static void test_billctl_dry_run(void **state)
{
	char dir[] = "/tmp/test_plans_dry.XXXXXX", dburl[512], bin[PATH_MAX], cfg[512];
	char out[8192], path[600], admin[512];
	cJSON *j, *monthly;
	PGconn *c;

	(void)state;
	assert_non_null(mkdtemp(dir));
	assert_non_null(realpath(ts_bin("billctl"), bin));
	snprintf(dburl, sizeof(dburl), "%s", ts_db_new("plans_dry"));
	snprintf(admin, sizeof(admin), "%s", getenv("DATABASE_URL") ? getenv("DATABASE_URL") : "");
	setenv("DATABASE_URL", dburl, 1);
	c = ts_db_connect(dburl);
	ts_sync_plans(c);
	assert_int_equal(run(out, sizeof(out),
	                     "cp -r plans %s/plans && cd %s/plans && "
	                     "sed -i 's/^amount: 2900/amount: 3100/' monthly.yaml && "
	                     "sed -i 's/^name: Meal kit (weekly)/name: Meal kit/' weekly.yaml && "
	                     "printf 'code: gold\\nname: Gold\\namount: 1000\\ncurrency: CAD\\n"
	                     "interval: month\\ninterval_count: 1\\n' > gold.yaml",
	                     dir, dir),
	                 0);
	snprintf(cfg, sizeof(cfg), "%s", ts_write_config(dir, dburl, NULL, "plans_dir: plans\n"));

	assert_int_equal(run(out, sizeof(out), "%s -c %s plans sync --dry-run 2>&1", bin, cfg), 0);
	assert_string_equal(out, "gold: new plan, v1, amount 10.00\n"
	                         "monthly: v1 -> v2, amount 29.00 -> 31.00\n"
	                         "weekly: v1 -> v2, terms changed, amount 64.50 unchanged\n"
	                         "plans: 5 loaded, 3 new versions (dry run: nothing written)\n");
	assert_int_equal(ts_db_long(c, "SELECT count(*) FROM plans"), 4);

	assert_int_equal(
	    run(out, sizeof(out), "%s plans sync --dry-run --json -c %s 2>&1", bin, cfg), 0);
	j = cJSON_Parse(out);
	assert_non_null(j);
	assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "dry_run")));
	assert_int_equal(cJSON_GetObjectItem(j, "created")->valueint, 3);
	monthly = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "changes"), 1);
	assert_string_equal(cJSON_GetObjectItem(monthly, "code")->valuestring, "monthly");
	assert_int_equal(cJSON_GetObjectItem(monthly, "version")->valueint, 2);
	assert_int_equal(cJSON_GetObjectItem(monthly, "previous_amount_cents")->valueint, 2900);
	assert_int_equal(cJSON_GetObjectItem(monthly, "amount_cents")->valueint, 3100);
	cJSON_Delete(j);
	assert_int_equal(ts_db_long(c, "SELECT count(*) FROM plans"), 4);

	assert_int_equal(run(out, sizeof(out), "%s -c %s plans sync 2>&1", bin, cfg), 0);
	assert_string_equal(out, "plans: 5 loaded, 3 new versions\n");
	assert_int_equal(ts_db_long(c, "SELECT amount_cents FROM plans WHERE code = 'monthly' "
	                               "AND version = 2"),
	                 3100);
	assert_int_equal(run(out, sizeof(out), "%s -c %s plans sync --dry-run 2>&1", bin, cfg), 0);
	assert_string_equal(out, "plans: 5 loaded, 0 new versions (dry run: nothing written)\n");

	assert_int_equal(run(out, sizeof(out), "%s -c %s plans sync --dry 2>&1", bin, cfg), 2);
	snprintf(path, sizeof(path), "rm -r %s", dir);
	assert_int_equal(run(out, sizeof(out), "%s", path), 0);
	PQfinish(c);
	setenv("DATABASE_URL", admin, 1);
}

static int setup(void **state)
{
	(void)state;
	url = ts_db_new("plans_sync");
	db = ts_db_connect(url);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	PQfinish(db);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_first_sync_then_nothing),
	    cmocka_unit_test(test_changed_amount_makes_v2),
	    cmocka_unit_test(test_reformatted_file_makes_nothing),
	    cmocka_unit_test(test_unknown),
	    cmocka_unit_test(test_sync_is_all_or_nothing),
	    cmocka_unit_test(test_concurrent_syncs),
	    cmocka_unit_test(test_billctl_plans),
	    cmocka_unit_test(test_billctl_dry_run),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
