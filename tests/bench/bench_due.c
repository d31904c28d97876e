/* bench_due.c: what "what is due now" costs. Fills a database with
 * 1,000,000 subscriptions (1,000 due), prints the EXPLAIN (ANALYZE, BUFFERS)
 * of the scheduler's due query and one line per figure; exits 1 when the
 * query stops reading only the due rows through subscriptions_due.
 *   bench_due [SUBSCRIPTIONS [DUE]]   (run by tests/bench_due.sh) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "db.h"
#include "support.h"

/* The scheduler's query (the lead's claim step), with the batch size as $2. */
#define DUE_SQL                                                                                    \
	"SELECT id FROM subscriptions WHERE next_charge_at <= $1::timestamptz AND next_charge_at " \
	"IS NOT NULL AND state IN ('trialing','active','past_due') ORDER BY next_charge_at "       \
	"LIMIT $2::int FOR UPDATE SKIP LOCKED"

static double now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

/* 1234567 -> "1,234,567" */
static const char *grouped(long n, char *buf, size_t len)
{
	char digits[32];
	size_t nd, at = 0;

	snprintf(digits, sizeof(digits), "%ld", n);
	nd = strlen(digits);
	for (size_t i = 0; i < nd && at + 2 < len; i++) {
		if (i > 0 && (nd - i) % 3 == 0)
			buf[at++] = ',';
		buf[at++] = digits[i];
	}
	buf[at] = '\0';
	return buf;
}

static void exec_or_die(PGconn *c, const char *sql, int n, const char *const *p)
{
	char err[512];

	if (db_exec(c, sql, n, p, err, sizeof(err)) < 0) {
		fprintf(stderr, "bench-due: %s\n", err);
		exit(1);
	}
}

/* Runs the due query with batch `limit` under EXPLAIN (ANALYZE, BUFFERS),
 * prints the plan and a summary line; 0 when it is an index scan on
 * subscriptions_due returning `expect` rows without filtering any. */
static int explain(PGconn *c, const char *limit, long expect, const char *what, long subs)
{
	const char *p[2] = {"now", limit};
	char err[512], g[32], line[256];
	const char *plan_line, *s;
	double ms = -1;
	long rows = -1, buffers = 0;
	int index = 0, seq = 0, filtered = 0;
	PGresult *r;

	/* ANALYZE really takes the row locks: roll them back. */
	exec_or_die(c, "BEGIN", 0, NULL);
	r = db_query(c, "EXPLAIN (ANALYZE, BUFFERS) " DUE_SQL, 2, p, err, sizeof(err));
	if (!r) {
		fprintf(stderr, "bench-due: %s\n", err);
		return -1;
	}
	db_rollback(c);
	for (int i = 0; i < PQntuples(r); i++) {
		plan_line = db_str(r, i, 0);
		printf("  %s\n", plan_line);
		index |= strstr(plan_line, "Index Scan using subscriptions_due") != NULL;
		seq |= strstr(plan_line, "Seq Scan") != NULL;
		filtered |= strstr(plan_line, "Rows Removed by Filter") != NULL;
		if (rows < 0 && (s = strstr(plan_line, "actual time=")) && (s = strstr(s, "rows=")))
			rows = atol(s + 5); /* the top node: what the query returned */
		if (!buffers && (s = strstr(plan_line, "Buffers: shared hit=")))
			buffers = atol(s + 20);
		if ((s = strstr(plan_line, "Execution Time: ")))
			ms = atof(s + 16);
	}
	PQclear(r);
	snprintf(line, sizeof(line),
	         "%s on subscriptions_due, %ld rows in %.2f ms, %ld buffers (%s; %s subscriptions)",
	         index && !seq ? "index scan" : "NOT an index scan", rows, ms, buffers, what,
	         grouped(subs, g, sizeof(g)));
	printf("bench-due: %s\n", line);
	if (!index || seq || filtered || rows != expect) {
		printf("bench-due: FAIL: expected an index scan on subscriptions_due returning %ld "
		       "rows and filtering none\n",
		       expect);
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	long subs = argc > 1 ? atol(argv[1]) : 1000000, due = argc > 2 ? atol(argv[2]) : 1000;
	char n[24], every[24], g1[32], g2[32];
	const char *p[2] = {n, every};
	PGconn *c;
	double t0;
	int rc = 0;

	if (subs <= 0 || due <= 0 || due > subs) {
		fprintf(stderr, "usage: bench_due [SUBSCRIPTIONS [DUE]]\n");
		return 2;
	}
	c = ts_db_connect(ts_db_new("bench_due"));
	snprintf(n, sizeof(n), "%ld", subs);
	snprintf(every, sizeof(every), "%ld", subs / due);
	t0 = now_ms();
	exec_or_die(c, "INSERT INTO customers (customer_id, state) VALUES ('bench', 'bound')", 0,
	            NULL);
	exec_or_die(
	    c,
	    "INSERT INTO plans (code, version, name, amount_cents, currency, interval, "
	    "interval_count, checksum) VALUES ('bench', 1, 'Bench', 1000, 'CAD', 'month', 1, "
	    "'x')",
	    0, NULL);
	/* The load skips the per-row triggers (audit, foreign keys): the rows are
	 * consistent by construction and the figure measured is the query. Every
	 * (subs/due)th is due; of the rest a tenth are canceled or paused (not
	 * in the index) and the others fall due over the coming year. */
	exec_or_die(c, "SET session_replication_role = replica", 0, NULL);
	exec_or_die(
	    c,
	    "INSERT INTO subscriptions (customer_id, plan_id, state, anchor, next_charge_at) "
	    "SELECT 'bench', (SELECT id FROM plans), CASE WHEN i % $2::int = 0 THEN "
	    "'active' WHEN i % 20 = 1 THEN 'canceled' WHEN i % 20 = 2 THEN 'paused' ELSE "
	    "(ARRAY['active','trialing','past_due'])[1 + i % 3] END, now(), CASE WHEN i % "
	    "$2::int = 0 THEN now() - make_interval(secs => i % 86400) WHEN i % 20 IN (1, "
	    "2) THEN NULL ELSE now() + make_interval(secs => 60 + i % 31536000) END FROM "
	    "generate_series(1, $1::int) i",
	    2, p);
	exec_or_die(c, "SET session_replication_role = DEFAULT", 0, NULL);
	exec_or_die(c, "VACUUM ANALYZE subscriptions", 0, NULL);
	printf("bench-due: %s subscriptions, %s due, loaded in %.1f s\n",
	       grouped(subs, g1, sizeof(g1)),
	       grouped(ts_db_long(c, "SELECT count(*) FROM subscriptions WHERE next_charge_at <= "
	                             "now()"),
	               g2, sizeof(g2)),
	       (now_ms() - t0) / 1e3);

	printf("bench-due: the scheduler's batch (LIMIT 256):\n");
	rc |= explain(c, "256", due < 256 ? due : 256, "one batch of the scheduler", subs);
	snprintf(n, sizeof(n), "%ld", subs);
	printf("bench-due: everything due (LIMIT %s):\n", n);
	rc |= explain(c, n, due, "all that is due", subs);
	printf("bench-due: bound: an index scan on subscriptions_due whose rows are the due rows "
	       "(none filtered), never a seq scan: %s\n",
	       rc ? "FAILED" : "met");
	PQfinish(c);
	return rc ? 1 : 0;
}
