/* support_db.c: test databases, binaries and configurations. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "db.h"
#include "migrate.h"
#include "support.h"

static const char *env_or(const char *name, const char *def)
{
	const char *v = getenv(name);
	return v && v[0] ? v : def;
}

static void die(const char *what, const char *err)
{
	fprintf(stderr, "test support: %s: %s\n", what, err);
	abort();
}

const char *ts_db_new(const char *name)
{
	static char url[512];
	char sql[256], err[512];
	PGconn *admin;
	int applied;

	admin =
	    db_connect(env_or("DATABASE_URL", "postgresql:///billing"), "tests", err, sizeof(err));
	if (!admin)
		die("connect", err);
	snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS t_%s WITH (FORCE)", name);
	if (db_exec(admin, sql, 0, NULL, err, sizeof(err)) < 0)
		die(sql, err);
	snprintf(sql, sizeof(sql), "CREATE DATABASE t_%s", name);
	if (db_exec(admin, sql, 0, NULL, err, sizeof(err)) < 0)
		die(sql, err);
	PQfinish(admin);
	snprintf(url, sizeof(url), "postgresql://%s:%s@%s:%s/t_%s", env_or("PGUSER", "billing"),
	         env_or("PGPASSWORD", "billing"), env_or("PGHOST", "127.0.0.1"),
	         env_or("PGPORT", "5432"), name);
	admin = ts_db_connect(url);
	if (migrate_apply(admin, migrate_embedded, migrate_embedded_count, &applied, err,
	                  sizeof(err)) < 0)
		die("migrate", err);
	PQfinish(admin);
	return url;
}

PGconn *ts_db_connect(const char *url)
{
	char err[512];
	PGconn *c = db_connect(url, "tests", err, sizeof(err));

	/* The fixtures' writes are stamped with the real time; a test with its
	 * own clock declares it with db_set_now. */
	if (!c || db_set_now(c, (int64_t)time(NULL), err, sizeof(err)) < 0)
		die("connect", err);
	return c;
}

long ts_db_long(PGconn *c, const char *sql)
{
	char err[512];
	PGresult *r = db_query(c, sql, 0, NULL, err, sizeof(err));
	long v;

	if (!r)
		die(sql, err);
	v = PQntuples(r) ? (long)db_i64(r, 0, 0) : -1;
	PQclear(r);
	return v;
}

const char *ts_bin(const char *name)
{
	static char path[4][512];
	static int next;
	char *p = path[next++ % 4];

	snprintf(p, 512, "%s/%s", env_or("B", "build"), name);
	return p;
}

void ts_cfg(struct cfg *c, const char *db_url, const struct ts_fakegw *g)
{
	/* the product's defaults, but for what a test run needs otherwise */
	cfg_defaults(c);
	snprintf(c->gateway.base_url, sizeof(c->gateway.base_url), "%s",
	         g ? g->base_url : "http://127.0.0.1:9/v2");
	snprintf(c->gateway.mch_id, sizeof(c->gateway.mch_id), "%s", TS_MCH_ID);
	snprintf(c->gateway.job_no, sizeof(c->gateway.job_no), "%s", TS_JOB_NO);
	snprintf(c->gateway.merchant_key, sizeof(c->gateway.merchant_key), "%s", TS_KEY);
	c->gateway.timeout_ms = 2000;
	c->gateway.connect_timeout_ms = 1000;
	snprintf(c->database_url, sizeof(c->database_url), "%s", db_url ? db_url : "");
	snprintf(c->timezone, sizeof(c->timezone), "America/Toronto");
	snprintf(c->order_prefix, sizeof(c->order_prefix), "T");
	c->lease_seconds = 10;
	c->poll_interval_ms = 200;
	/* ephemeral ports, so that tests run side by side */
	snprintf(c->listen_address, sizeof(c->listen_address), "127.0.0.1:0");
	snprintf(c->admin_address, sizeof(c->admin_address), "127.0.0.1:0");
	snprintf(c->success_url, sizeof(c->success_url), "https://example.com/welcome");
	snprintf(c->failure_url, sizeof(c->failure_url), "https://example.com/sorry");
	/* events settings start empty: the tests of events set what they use */
	memset(&c->events, 0, sizeof(c->events));
}

const char *ts_write_config(const char *dir, const char *db_url, const struct ts_fakegw *g,
                            const char *extra_yaml)
{
	static char path[512];
	char keypath[512], plans[PATH_MAX];
	FILE *f;

	snprintf(keypath, sizeof(keypath), "%s/merchant.key", dir);
	f = fopen(keypath, "w");
	if (!f)
		die("write", keypath);
	fputs(TS_KEY "\n", f);
	fclose(f);
	chmod(keypath, 0600);
	/* Relative paths are the config file's directory's: the repository's
	 * plans are named in full. */
	if (!realpath("plans", plans))
		die("realpath", "plans");
	snprintf(path, sizeof(path), "%s/billing.yaml", dir);
	f = fopen(path, "w");
	if (!f)
		die("write", path);
	fprintf(f,
	        "gateway:\n"
	        "  base_url: %s\n"
	        "  mch_id: \"%s\"\n"
	        "  job_no: %s\n"
	        "  merchant_key_file: %s\n"
	        "  timeout_ms: 2000\n"
	        "  connect_timeout_ms: 1000\n"
	        "database:\n"
	        "  url: \"%s\"\n"
	        "billing:\n"
	        "  timezone: America/Toronto\n"
	        "  order_prefix: T\n"
	        "  lease_seconds: 10\n"
	        "plans_dir: %s\n"
	        "%s%s",
	        g ? g->base_url : "http://127.0.0.1:9/v2", TS_MCH_ID, TS_JOB_NO, keypath,
	        db_url ? db_url : "", plans,
	        /* daemons side by side: each its own admin port */
	        extra_yaml && strstr(extra_yaml, "admin:") ? ""
	                                                   : "admin:\n  address: 127.0.0.1:0\n",
	        extra_yaml ? extra_yaml : "");
	fclose(f);
	return path;
}
