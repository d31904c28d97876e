/* billingd: charges every due subscription exactly once, on schedule.
 *
 * Runs in the foreground (a supervisor such as systemd owns the process),
 * logs logfmt on stderr, and tells systemd (Type=notify) when it is ready,
 * what the last pass did, and that its main loop still turns (watchdog).
 * SIGTERM/SIGINT: stop claiming, finish what is in flight, exit 0. SIGHUP:
 * reload the configuration. Plan rows are only read (billctl plans sync
 * writes them). A lost database is logged, backed off and reconnected. */
#include <errno.h>
#include <stddef.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <systemd/sd-daemon.h>

#include "admin.h"
#include "calendar.h"
#include "config.h"
#include "db.h"
#include "events.h"
#include "failover.h"
#include "gateway.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "migrate.h"
#include "owner_lock.h"
#include "plans.h"
#include "scheduler.h"

static volatile sig_atomic_t got_stop, got_reload;
static struct sched *running;
static struct listener *lsn;  /* NULL with --once */
static struct events *events; /* NULL with --once */
static struct owner_lock *owner_lock;
/* The server's history against the ledger's (failover.h): set on every
 * connection, probing while they differ. */
static struct db_identity server;
static int probing;

static void on_signal(int sig)
{
	if (sig == SIGHUP) {
		got_reload = 1;
		return;
	}
	got_stop = 1;
	if (running)
		sched_stop(running);
}

static void usage(FILE *f)
{
	fprintf(f, "usage: billingd [-c FILE] [--check-config] [--once] [--now TIMESTAMP] "
	           "[--foreground]\n"
	           "       billingd --help | --version\n"
	           "  -c, --config FILE  configuration (default: $BILLING_CONFIG, else\n"
	           "                     ./billing.yaml if it exists, else " CFG_SYSTEM_PATH ")\n"
	           "  --check-config     check the configuration and the plan files, then exit\n"
	           "  --once             one pass, then exit (no listener)\n"
	           "  --now TIMESTAMP    test clock: time runs on from TIMESTAMP ($BILLING_NOW);\n"
	           "                     with --once, the pass is at TIMESTAMP\n"
	           "  --foreground       accepted; billingd always runs in the foreground\n"
	           "signals: TERM/INT stop after what is in flight, HUP reloads\n");
}

struct opts {
	const char *config;
	int check, once;
	const char *now;
	int help, version;
};

static int parse_opts(int argc, char **argv, struct opts *o)
{
	/* Flags set their field through getopt_long itself; only the options
	 * with a value and an unknown one come back to the switch. */
	int foreground = 0;
	const struct option longopts[] = {{"check-config", no_argument, &o->check, 1},
	                                  {"once", no_argument, &o->once, 1},
	                                  {"now", required_argument, NULL, 'n'},
	                                  {"foreground", no_argument, &foreground, 1},
	                                  {"config", required_argument, NULL, 'c'},
	                                  {"help", no_argument, NULL, 'h'},
	                                  {"version", no_argument, &o->version, 1},
	                                  {NULL, 0, NULL, 0}};
	int ch;

	o->now = getenv("BILLING_NOW");
	while ((ch = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
		if (ch == 'c')
			o->config = optarg;
		else if (ch == 'n')
			o->now = optarg;
		else if (ch == 'h')
			o->help = 1;
		else if (ch != 0) {
			usage(stderr);
			return -1;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "billingd: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return -1;
	}
	return 0;
}

/* Daemons never write plan rows: only `billctl plans sync` does, so that
 * hosts with different plan files cannot flip a price back and forth. The
 * rows must exist; plan files that differ from them are said in one line.
 * -1 with err when there is no plan row or the database fails. */
static int check_plans(PGconn *db, const struct cfg *c, char *err, size_t errlen)
{
	struct plan *p = NULL;
	struct plan_diff *d;
	int n = 0, differ = 0;
	char e[512], count[16];

	if (plans_list(db, &p, &n, err, errlen) < 0)
		return -1;
	free(p);
	if (n == 0) {
		snprintf(err, errlen, "no plans in the database (billctl plans sync loads them)");
		return -1;
	}
	if (plans_load_dir(c->plans_dir, &p, &n, e, sizeof(e)) < 0) {
		log_event("warn", "plans_files", "error", e, (char *)NULL);
		return 0;
	}
	d = calloc((size_t)n + 1, sizeof(*d));
	if (d && plans_diff(db, p, n, d, e, sizeof(e)) == 0) {
		for (int i = 0; i < n; i++)
			differ += d[i].change != PLAN_SAME;
		snprintf(count, sizeof(count), "%d", differ);
		if (differ)
			log_event("warn", "plans_differ", "dir", c->plans_dir, "plans", count,
			          "hint", "billctl plans sync --dry-run shows the difference",
			          (char *)NULL);
	}
	free(d);
	free(p);
	return 0;
}

/* The gateway's word on mch_id and the key (gw_prove): 1 with err when it
 * refused either; nothing proven (the gateway unreachable) is only logged,
 * since the passes retry and back off on their own. */
static int credentials_refused(struct gw_client *gw, char *err, size_t errlen)
{
	switch (gw_prove(gw, err, errlen)) {
	case GW_FAIL:
		return 1;
	case GW_UNKNOWN:
		log_event("warn", "credentials_unproven", "error", err, (char *)NULL);
		return 0;
	default:
		log_event("info", "credentials_proven", (char *)NULL);
		return 0;
	}
}

/* --check-config: a client for gc, proven; GW_FAIL with err when refused.
 * Nothing proven is a warning on stderr. */
static enum gw_outcome prove_credentials(const struct cfg_gateway *gc, char *err, size_t errlen)
{
	struct gw_client *gw = gw_client_new(gc, err, errlen);
	enum gw_outcome o;

	if (!gw)
		return GW_FAIL;
	o = gw_prove(gw, err, errlen);
	gw_client_free(gw);
	if (o == GW_UNKNOWN)
		fprintf(stderr, "billingd: warning: %s\n", err);
	return o;
}

/* --check-config: a primary whose standbys are all asynchronous can lose
 * committed intents at a promotion (README, "High availability"). Said in
 * one line; a database out of reach is not this check's business. */
static void warn_replication(const struct cfg *c)
{
	char err[512], warn[512];
	PGconn *db = db_connect(c->database_url, "billingd --check-config", err, sizeof(err));

	if (db && failover_replication_warning(db, warn, sizeof(warn), err, sizeof(err)) > 0)
		fprintf(stderr, "billingd: warning: %s\n", warn);
	PQfinish(db);
}

/* A reload cannot move a listener or reconnect it elsewhere: each such
 * setting that changed is said in one line. */
static void restart_needed(const struct cfg *old, const struct cfg *fresh)
{
	static const struct {
		const char *name;
		size_t off;
	} needs[] = {{"listen.address", offsetof(struct cfg, listen_address)},
	             {"admin.address", offsetof(struct cfg, admin_address)},
	             {"database.url", offsetof(struct cfg, database_url)}};

	for (size_t i = 0; i < sizeof(needs) / sizeof(needs[0]); i++)
		if (strcmp((const char *)old + needs[i].off, (const char *)fresh + needs[i].off))
			log_event("warn", "reload_needs_restart", "setting", needs[i].name,
			          (char *)NULL);
}

/* SIGHUP: the configuration and a gateway client for it, applied to the
 * scheduler and the listener; plan files are compared, never written. A
 * bad file, or a key or mch_id the gateway refuses, keeps what runs. -1
 * only if the scheduler cannot restart. */
static int reload(const char *path, struct cfg *cfg, PGconn *db, struct gw_client **gw,
                  const char *owner)
{
	struct cfg fresh;
	struct gw_client *ngw;
	struct sched *old = running;
	struct failover_recent *sent;
	char err[512];

	sd_notify(0, "RELOADING=1");
	if (cfg_load(&fresh, path, err, sizeof(err)) < 0 ||
	    !(ngw = gw_client_new(&fresh.gateway, err, sizeof(err)))) {
		log_event("error", "reload", "error", err, (char *)NULL);
		cfg_wipe(&fresh);
		sd_notify(0, "READY=1");
		return 0;
	}
	if (credentials_refused(ngw, err, sizeof(err))) {
		log_event("error", "reload", "error", err, "kept", "the running configuration",
		          (char *)NULL);
		gw_client_free(ngw);
		cfg_wipe(&fresh);
		sd_notify(0, "READY=1");
		return 0;
	}
	/* Gateway, billing and callback settings take effect at once; the
	 * addresses and the database need a restart. The signal handler must
	 * not see a freed scheduler. What was sent in the last lease is still
	 * remembered for a failover. */
	restart_needed(cfg, &fresh);
	running = NULL;
	sent = sched_take_sent(old);
	sched_free(old);
	gw_client_free(*gw);
	*gw = ngw;
	cfg_wipe(cfg);
	*cfg = fresh;
	events_reload(events, &cfg->events);
	cfg_wipe(&fresh);
	if (lsn)
		listener_reload(lsn, cfg);
	running = sched_new(cfg, db, *gw, owner);
	if (!running) {
		failover_recent_free(sent);
		log_event("error", "reload", "error", "cannot restart the scheduler", (char *)NULL);
		return -1;
	}
	sched_give_sent(running, sent);
	sched_set_owner_lock(running, owner_lock);
	sched_set_probing(running, probing);
	if (got_stop)
		sched_stop(running);
	log_event("info", "reloaded", "config", path, (char *)NULL);
	sd_notify(0, "READY=1");
	if (check_plans(db, cfg, err, sizeof(err)) < 0)
		log_event("error", "reload", "error", err, (char *)NULL);
	return 0;
}

/* Connects, retrying with back-off (1 s, doubling up to 30 s) until it
 * works or a stop is asked for; database.url may name several hosts, and
 * each attempt reaches whichever is the primary. One line when the first
 * attempt fails (lost: the caller said so already), one when connected
 * after a failure. */
static PGconn *connect_db(const struct cfg *c, const char *owner, int once, int lost)
{
	struct db_backoff bo;
	char err[512], where[128], secs[24];

	db_backoff_reset(&bo);
	if (lost)
		db_backoff_next(&bo, (int64_t)time(NULL));
	for (;;) {
		PGconn *db = db_connect(c->database_url, owner, err, sizeof(err));
		if (db && bo.tries) {
			db_where(db, where, sizeof(where));
			snprintf(secs, sizeof(secs), "%lld",
			         (long long)((int64_t)time(NULL) - bo.down_since));
			log_event("info", "database_reconnected", "server", where, "down_seconds",
			          secs, (char *)NULL);
		}
		if (db) {
			if (migrate_check(db, migrate_embedded, migrate_embedded_count, err,
			                  sizeof(err)) == 0)
				return db;
			PQfinish(db);
			log_event("error", "schema", "error", err, (char *)NULL);
			return NULL;
		}
		if (!bo.tries || once)
			log_event("error", "database_down", "error", err, (char *)NULL);
		if (once || got_stop)
			return NULL;
		db_backoff_next(&bo, (int64_t)time(NULL));
		sd_notifyf(0, "STATUS=database down, retrying in %d s", bo.delay);
		sd_notify(0, "WATCHDOG=1"); /* waiting on the database is not a hang */
		sleep((unsigned)bo.delay);
	}
}

/* After every connection: what this process sent in the last lease and the
 * server lost goes back as unknown, and a changed history turns probing on.
 * -1 with err (the next pass finds out whether the database is down). */
static int after_connect(PGconn *db, int64_t now, char *err, size_t errlen)
{
	int changed = failover_check(db, &server, err, errlen);

	if (changed < 0)
		return -1;
	probing = changed;
	if (running)
		sched_set_probing(running, probing);
	return running && sched_restore_sent(running, now, err, errlen) < 0 ? -1 : 0;
}

/* After a pass that claimed everything due while probing: the new history
 * is recorded once nothing from before it is open, and probing stops. */
static void settle(PGconn *db, const struct sched_stats *st)
{
	char err[512];
	int n;

	if (!probing || !st->swept)
		return;
	n = failover_settle(db, &server, err, sizeof(err));
	if (n < 0)
		log_event("error", "database_history", "error", err, (char *)NULL);
	if (n > 0) {
		probing = 0;
		sched_set_probing(running, 0);
	}
}

/* systemctl status shows the last pass's figures. */
static void notify_status(const struct sched_stats *st)
{
	sd_notifyf(0,
	           "STATUS=last pass: %ld charged, %ld succeeded, %ld declined, %ld unknown, "
	           "%ld proven absent, %ld binding checks",
	           st->claimed, st->succeeded, st->declined, st->unknown, st->absent, st->bindings);
}

/* --now shifts the clock: time runs on from the given instant. With --once
 * it stops there: the one pass is at that instant, however long the start
 * took (a second boundary crossed while connecting would date it later). */
static int64_t now_offset;
static int now_stopped;

static int64_t billing_clock(void)
{
	return (now_stopped ? 0 : (int64_t)time(NULL)) + now_offset;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	/* A signal interrupts the sleep, which is what we want. */
	nanosleep(&ts, NULL);
}

/* The merchant key is in this process's memory: no core file, and no
 * ptrace or /proc/PID/mem by other processes of the same user. */
static void no_core_dumps(void)
{
	const struct rlimit zero = {0, 0};

	if (setrlimit(RLIMIT_CORE, &zero) < 0 || prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		log_event("warn", "no_core_dumps", "error", strerror(errno), (char *)NULL);
}

int main(int argc, char **argv)
{
	struct opts o = {0};
	struct cfg cfg;
	char err[512], owner[96], host[64] = "";
	PGconn *db;
	struct gw_client *gw;
	struct admin *adm = NULL;
	struct sigaction sa;
	int rc = 0;

	no_core_dumps();
	if (parse_opts(argc, argv, &o) < 0)
		return 2;
	if (o.help || o.version) {
		if (o.help)
			usage(stdout);
		else
			printf("billingd %s\n", BILLING_VERSION);
		return 0;
	}
	o.config = cfg_find_path(o.config);
	if (cfg_load(&cfg, o.config, err, sizeof(err)) < 0) {
		fprintf(stderr, "billingd: %s\n", err);
		return 2;
	}
	if (o.now) {
		int64_t t;
		if (cal_parse_time(o.now, &t, err, sizeof(err)) < 0) {
			fprintf(stderr, "billingd: --now: %s\n", err);
			return 2;
		}
		now_stopped = o.once;
		now_offset = now_stopped ? t : t - (int64_t)time(NULL);
	}
	if (o.check) {
		struct plan *p = NULL;
		int n = 0;
		if (plans_load_dir(cfg.plans_dir, &p, &n, err, sizeof(err)) < 0) {
			fprintf(stderr, "billingd: %s\n", err);
			return 2;
		}
		free(p);
		if (prove_credentials(&cfg.gateway, err, sizeof(err)) == GW_FAIL) {
			fprintf(stderr, "billingd: %s\n", err);
			return 2;
		}
		warn_replication(&cfg);
		printf("%s: configuration ok, %d plans in %s\n", o.config, n, cfg.plans_dir);
		return 0;
	}

	gethostname(host, sizeof(host) - 1);
	snprintf(owner, sizeof(owner), "billingd:%s:%d", host, (int)getpid());
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	db = connect_db(&cfg, owner, o.once, 0);
	if (!db)
		return 1;
	if (db_sessions_shared(cfg.database_url, owner, err, sizeof(err)) == 1) {
		fprintf(stderr,
		        "billingd: database.url: two connections were served by one server "
		        "session (a pooler in transaction mode?): billingd keeps state in its "
		        "sessions; use session pooling or connect directly\n");
		PQfinish(db);
		return 2;
	}
	if (after_connect(db, billing_clock(), err, sizeof(err)) < 0) {
		fprintf(stderr, "billingd: %s\n", err);
		PQfinish(db);
		return 1;
	}
	if (check_plans(db, &cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "billingd: %s\n", err);
		PQfinish(db);
		return 1;
	}
	gw = gw_client_new(&cfg.gateway, err, sizeof(err));
	if (!gw) {
		fprintf(stderr, "billingd: %s\n", err);
		PQfinish(db);
		return 1;
	}
	if (credentials_refused(gw, err, sizeof(err))) {
		fprintf(stderr, "billingd: %s\n", err);
		rc = 2;
		goto out;
	}
	/* held for the process's whole life, across reloads and reconnects */
	owner_lock = owner_lock_new(cfg.database_url, owner);
	running = owner_lock ? sched_new(&cfg, db, gw, owner) : NULL;
	if (!running) {
		fprintf(stderr, "billingd: cannot start the scheduler (out of memory)\n");
		rc = 1;
		goto out;
	}
	sched_set_owner_lock(running, owner_lock);
	sched_set_probing(running, probing);
	if (!o.once) {
		lsn = listener_start(&cfg, billing_clock, err, sizeof(err));
		adm = lsn ? admin_start(&cfg, billing_clock, err, sizeof(err)) : NULL;
		if (adm)
			events = events_start(&cfg, billing_clock, owner, err, sizeof(err));
		if (!events) {
			fprintf(stderr, "billingd: %s\n", err);
			rc = 1;
			goto out;
		}
	}
	log_event("info", "started", "owner", owner, "once", o.once ? "true" : "false",
	          (char *)NULL);
	/* The database, its schema and the listener are up. */
	sd_notify(0, "READY=1\nSTATUS=started");

	while (!got_stop) {
		struct sched_stats st = {0};
		struct timespec t0, t1;

		if (got_reload) {
			got_reload = 0;
			if (reload(o.config, &cfg, db, &gw, owner) < 0) {
				rc = 1;
				break;
			}
		}
		sd_notify(0, "WATCHDOG=1");
		clock_gettime(CLOCK_MONOTONIC, &t0);
		if (sched_pass(running, billing_clock(), &st, err, sizeof(err)) < 0) {
			if (db_is_down(db)) {
				/* Nothing the failed statements said is taken as an
				 * answer: the next pass reads it all again. */
				char where[128];

				db_where(db, where, sizeof(where));
				log_event("error", "database_lost", "server", where, "error", err,
				          (char *)NULL);
				PQfinish(db);
				db = connect_db(&cfg, owner, o.once, 1);
				if (!db) {
					rc = got_stop ? 0 : 1; /* a stop asked for while waiting */
					break;
				}
				sched_set_db(running, db);
				owner_lock_renew(owner_lock);
				if (after_connect(db, billing_clock(), err, sizeof(err)) < 0)
					log_event("error", "database", "error", err, (char *)NULL);
				continue;
			}
			log_event("error", "pass", "error", err, (char *)NULL);
			if (o.once) {
				rc = 1;
				break;
			}
		} else {
			clock_gettime(CLOCK_MONOTONIC, &t1);
			metrics_pass((int64_t)time(NULL),
			             (double)(t1.tv_sec - t0.tv_sec) +
			                 (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
			notify_status(&st);
			settle(db, &st);
		}
		if (o.once)
			break;
		sleep_ms(cfg.poll_interval_ms);
	}
	sd_notify(0, "STOPPING=1");
	log_event("info", "stopped", "owner", owner, (char *)NULL);
out:
	events_stop(events);
	admin_stop(adm);
	listener_stop(lsn);
	sched_free(running);
	running = NULL;
	owner_lock_free(owner_lock);
	gw_client_free(gw);
	PQfinish(db);
	cfg_wipe(&cfg);
	return rc;
}
