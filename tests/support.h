/* support.h: fixtures shared by the tests: a fresh migrated database per test
 * program (in the throwaway cluster of tests/pg.sh) and the fake gateway
 * (build/fakegw) as a subprocess over real HTTP. */
#ifndef SUPPORT_H
#define SUPPORT_H

#include <sys/types.h>
#include <libpq-fe.h>
#include <cjson/cJSON.h>

#include "config.h"

/* Creates database "t_<name>" (dropped first if it exists) in the cluster of
 * $DATABASE_URL, applies the migrations and returns its URL (static buffer,
 * valid until the next call). Aborts the test program on failure. */
const char *ts_db_new(const char *name);
/* Connects or aborts. */
PGconn *ts_db_connect(const char *url);
/* Runs SQL and returns the first column of the first row as a long (or
 * -1 when there is no row); aborts on error. */
long ts_db_long(PGconn *c, const char *sql);

/* Path of a built binary: ts_bin("billctl") -> "$B/billctl". */
const char *ts_bin(const char *name);

#define TS_KEY    "TESTKEY0123456789abcdef"
#define TS_MCH_ID "10000701"
#define TS_JOB_NO "jack123"

struct ts_fakegw {
	pid_t pid;
	int port;
	char base_url[128]; /* http://127.0.0.1:PORT/v2 */
};

/* Starts $B/fakegw on an ephemeral port with TS_KEY and TS_MCH_ID; extra
 * arguments (may be NULL) such as "--latency-ms 20". Aborts on failure. */
void ts_fakegw_start(struct ts_fakegw *g, const char *extra_args);
void ts_fakegw_stop(struct ts_fakegw *g);
/* POSTs json to http://127.0.0.1:PORT/_fake/<path>; returns the HTTP status
 * and, when resp is not NULL, the body (malloc'd). */
long ts_fakegw_post(const struct ts_fakegw *g, const char *path, const char *json, char **resp);
/* GET /_fake/ledger, parsed (caller cJSON_Delete()s). */
cJSON *ts_fakegw_ledger(const struct ts_fakegw *g);
/* Plays the customer on a hosted page: GETs pay_url with the given card
 * fields appended, does not follow the redirect, and returns the Location
 * header (malloc'd) or NULL. */
char *ts_fakegw_hosted(const char *pay_url, const char *card_query);

/* A configuration for tests: the database at db_url, the fake gateway g (may
 * be NULL), TS_KEY as merchant key, timezone America/Toronto, plans/ as
 * plans_dir, listen and admin on 127.0.0.1:0. */
void ts_cfg(struct cfg *c, const char *db_url, const struct ts_fakegw *g);

/* Writes a billing.yaml for ts_cfg's settings into dir and the key into
 * dir/merchant.key (mode 0600); returns the yaml path (static buffer). The
 * admin address is 127.0.0.1:0 unless extra_yaml has an admin section. */
const char *ts_write_config(const char *dir, const char *db_url, const struct ts_fakegw *g,
                            const char *extra_yaml);

/* ---- billing fixtures (support_billing.c) ---- */
struct gw_client;

/* Enrols customer id on the fake gateway through cc_adduser and its hosted
 * page (card "4501161234567214" unless card is given), and records it as
 * bound in our database. Aborts on failure. */
void ts_enrol(PGconn *db, struct gw_client *gw, const char *id, const char *card);
/* Loads plans/ into the database (plans_sync). */
void ts_sync_plans(PGconn *db);
/* Subscribes customer to the current version of plan_code from start
 * (unix seconds), with the plan's trial; returns the subscription id. */
long ts_subscribe(PGconn *db, const char *customer, const char *plan_code, long start);

/* ---- processes (support_proc.c) ---- */
/* Monotonic milliseconds, and a sleep that signals do not cut short. */
long ts_ms_now(void);
void ts_sleep_ms(long ms);
/* Starts argv[0] (NULL-terminated argv) with the extra environment settings
 * env ("K=V", NULL-terminated; may be NULL), stdin and stdout on /dev/null
 * and stderr appended to err_path (NULL: inherited). The child is killed if
 * the test program dies. Aborts if it cannot fork. */
pid_t ts_spawn(const char *const argv[], const char *const env[], const char *err_path);
/* Waits up to timeout_ms for pid to exit: its wait status, or -1 when it is
 * still running. */
int ts_wait_pid(pid_t pid, long timeout_ms);
/* kill -9 and reap. */
void ts_kill_pid(pid_t pid);
/* Waits up to timeout_ms until the file at path (a daemon's log) contains
 * what; aborts when it does not. */
void ts_wait_log(const char *path, const char *what, long timeout_ms);
/* Polls sql (its first column of the first row, as a long) on the database
 * at url every 50 ms until it equals want or timeout_ms pass; returns the
 * last value seen (-1: no row or no answer). Connection errors are retried,
 * so that it waits across a server restart. */
long ts_db_wait(const char *url, const char *sql, long want, long timeout_ms);
/* The whole file (malloc'd); aborts if it cannot be read. */
char *ts_read_file(const char *path);
/* The value of key in one logfmt line (up to its newline), unquoted; 0, or
 * -1 when the key is absent or the line is not logfmt. */
int ts_logfmt_get(const char *line, const char *key, char *out, size_t outlen);

#endif
