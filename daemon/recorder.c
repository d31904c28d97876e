/* recorder.c: the recorder thread. Completed jobs queue up while a batch is
 * written; each batch is one transaction: the charges this process still
 * owns are locked with their subscriptions, each outcome is read
 * (interpret), the billing rules move the subscription, and everything is
 * written in three statements. Log lines and metrics follow the commit, so
 * that nothing is reported that was not recorded. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "charges.h"
#include "customers.h"
#include "db.h"
#include "log.h"
#include "metrics.h"
#include "recorder.h"
#include "subscriptions.h"

struct recorder {
	const struct cfg *cfg;
	char owner[96];
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct rec_jobs queue;
	int quit;
	int writing;  /* jobs in the batch being written (0: none) */
	int flushing; /* a pass has ended: no more outcomes to wait for */
	PGconn *db;
	struct plan *plans; /* cache: plan versions never change */
	int nplans;
	struct sched_stats stats; /* since the last flush */
	int failed;
	char err[512];
};

static void *recorder_main(void *arg);

struct recorder *recorder_new(const struct cfg *cfg, const char *owner)
{
	struct recorder *rec = calloc(1, sizeof(*rec));

	if (!rec)
		return NULL;
	rec->cfg = cfg;
	snprintf(rec->owner, sizeof(rec->owner), "%s", owner);
	pthread_mutex_init(&rec->mu, NULL);
	pthread_cond_init(&rec->cv, NULL);
	if (pthread_create(&rec->thread, NULL, recorder_main, rec) != 0) {
		pthread_mutex_destroy(&rec->mu);
		pthread_cond_destroy(&rec->cv);
		free(rec);
		return NULL;
	}
	return rec;
}

void recorder_free(struct recorder *rec)
{
	pthread_mutex_lock(&rec->mu);
	rec->quit = 1;
	pthread_cond_broadcast(&rec->cv);
	pthread_mutex_unlock(&rec->mu);
	pthread_join(rec->thread, NULL);
	rec_jobs_free(&rec->queue);
	free(rec->plans);
	PQfinish(rec->db);
	pthread_mutex_destroy(&rec->mu);
	pthread_cond_destroy(&rec->cv);
	free(rec);
}

void rec_jobs_add(struct rec_jobs *q, struct rec_job *j)
{
	if (q->n == q->cap) {
		int cap = q->cap ? q->cap * 2 : 64;
		struct rec_job **grown = realloc(q->v, (size_t)cap * sizeof(*grown));

		if (!grown)
			abort(); /* an outcome must not be dropped silently */
		q->v = grown;
		q->cap = cap;
	}
	q->v[q->n++] = j;
}

void rec_jobs_free(struct rec_jobs *q)
{
	for (int i = 0; i < q->n; i++)
		free(q->v[i]);
	free(q->v);
	memset(q, 0, sizeof(*q));
}

/* The backlog's gauge, kept with the backlog. Called with mu held. */
static void backlog_changed(const struct recorder *rec)
{
	metrics_unrecorded(rec->queue.n + rec->writing);
}

void recorder_push(struct rec_job *j)
{
	struct recorder *rec = j->rec;

	pthread_mutex_lock(&rec->mu);
	rec_jobs_add(&rec->queue, j);
	backlog_changed(rec);
	pthread_cond_signal(&rec->cv);
	pthread_mutex_unlock(&rec->mu);
}

int recorder_backlog(struct recorder *rec)
{
	int n;

	pthread_mutex_lock(&rec->mu);
	n = rec->queue.n + rec->writing;
	pthread_mutex_unlock(&rec->mu);
	return n;
}

/* The deadline timeout_ms from now, for pthread_cond_timedwait. */
static struct timespec deadline(int timeout_ms)
{
	struct timespec t;

	clock_gettime(CLOCK_REALTIME, &t);
	t.tv_sec += timeout_ms / 1000;
	t.tv_nsec += (timeout_ms % 1000) * 1000000L;
	if (t.tv_nsec >= 1000000000L) {
		t.tv_sec++;
		t.tv_nsec -= 1000000000L;
	}
	return t;
}

void recorder_wait_below(struct recorder *rec, int n, int timeout_ms)
{
	struct timespec until = deadline(timeout_ms);

	pthread_mutex_lock(&rec->mu);
	while (rec->queue.n + rec->writing >= n &&
	       pthread_cond_timedwait(&rec->cv, &rec->mu, &until) == 0)
		;
	pthread_mutex_unlock(&rec->mu);
}

static const struct plan *plan_cached(struct recorder *rec, int64_t id, char *err, size_t errlen)
{
	struct plan *grown;

	for (int i = 0; i < rec->nplans; i++)
		if (rec->plans[i].id == id)
			return &rec->plans[i];
	grown = realloc(rec->plans, (size_t)(rec->nplans + 1) * sizeof(*grown));
	if (!grown) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	rec->plans = grown;
	if (plans_get(rec->db, id, &rec->plans[rec->nplans], err, errlen) < 0)
		return NULL;
	return &rec->plans[rec->nplans++];
}

/* What a gateway answer means for the charge. */
static enum billing_result interpret(const struct rec_job *j)
{
	const struct gw_result *r = &j->res;

	if (j->unsent)
		return BILLING_ABSENT;
	if (j->is_query) {
		if (r->outcome == GW_FAIL)
			return BILLING_ABSENT;
		if (r->outcome != GW_SUCCESS || !r->has_order)
			return BILLING_UNKNOWN;
		switch (gw_status_state(r->order.status)) {
		case GW_ORDER_PAID:
			return BILLING_SUCCEEDED;
		case GW_ORDER_OPEN:
			return BILLING_UNKNOWN; /* wait for the final state */
		default:
			return BILLING_DECLINED;
		}
	}
	if (j->wave)
		return BILLING_BUSY;
	switch (r->outcome) {
	case GW_SUCCESS:
		return BILLING_SUCCEEDED;
	case GW_FAIL:
		/* Not processed, and not the customer's doing: retried later
		 * without a dunning step (a wrong key must not dun everyone). */
		return r->reason == GW_R_BUSY || r->reason == GW_R_AUTH ? BILLING_BUSY
		                                                        : BILLING_DECLINED;
	default:
		return BILLING_UNKNOWN;
	}
}

static const char *charge_state(enum billing_result r)
{
	switch (r) {
	case BILLING_SUCCEEDED:
		return charges_state_names[CHARGES_SUCCEEDED];
	case BILLING_UNKNOWN:
		return charges_state_names[CHARGES_UNKNOWN];
	default:
		return charges_state_names[CHARGES_FAILED];
	}
}

/* A query that found the order carries its ids; a query that proved it
 * absent says so; otherwise the gateway's own message. */
static const char *ret_msg(const struct rec_job *j, enum billing_result r)
{
	if (j->unsent)
		return "not sent: a gateway wave";
	if (r == BILLING_ABSENT)
		return "not found at the gateway";
	if (r == BILLING_UNKNOWN)
		return j->res.detail[0] ? j->res.detail : j->res.ret_msg;
	return j->res.ret_msg;
}

struct batch {
	struct recorder *rec;
	struct rec_job **jobs;
	int njobs;
	struct charges_outcomes charges;
	struct subscriptions_moves subs;
	struct db_arr rebind;
	int nrebind;
};

static void batch_free(struct batch *b)
{
	charges_outcomes_free(&b->charges);
	subscriptions_moves_free(&b->subs);
	db_arr_free(&b->rebind);
}

static struct rec_job *find_job(struct rec_job **jobs, int n, int64_t charge_id)
{
	for (int i = 0; i < n; i++)
		if (jobs[i]->charge_id == charge_id)
			return jobs[i];
	return NULL;
}

/* After the commit: the log line, the metric and the pass's counts. */
static void report_outcome(const struct rec_job *j, struct sched_stats *st)
{
	enum billing_result r = j->result;
	char amount[24];

	snprintf(amount, sizeof(amount), "%lld", (long long)j->amount);
	/* A refused key or mch_id is the operator's to fix, for every charge. */
	log_event(j->res.reason == GW_R_AUTH ? "error"
	          : r == BILLING_UNKNOWN     ? "warn"
	                                     : "info",
	          j->is_query ? "charge_resolved" : "charge", "subscription", j->sub_id,
	          "mch_order_no", j->mch_order_no, "amount", amount, "outcome",
	          billing_result_names[r], "pay_order_id", j->res.order.pay_order_id, "sub_state",
	          j->sub_state, "ret_msg", ret_msg(j, r), (char *)NULL);
	/* One count per attempt, at its final outcome; queries apart. */
	if (j->is_query)
		metrics_query(billing_result_names[r]);
	if (r != BILLING_UNKNOWN)
		metrics_charge(billing_result_names[r]);
	if (r == BILLING_SUCCEEDED)
		metrics_charged(j->amount);
	if (j->res.reason == GW_R_AUTH)
		st->auth++;
	switch (r) {
	case BILLING_SUCCEEDED:
		st->succeeded++;
		break;
	case BILLING_DECLINED:
	case BILLING_BUSY:
		st->declined++;
		break;
	case BILLING_ABSENT:
		st->absent++;
		break;
	case BILLING_UNKNOWN:
		st->unknown++;
		break;
	}
}

/* Adds one owned charge to the batch (charges_owned_fn). */
static int add_to_batch(void *arg, const struct charges_owned *o, char *err, size_t errlen)
{
	struct batch *b = arg;
	struct rec_job *j = find_job(b->jobs, b->njobs, o->charge_id);
	const struct plan *p = plan_cached(b->rec, o->plan_id, err, errlen);
	struct billing_sub ss = {0};
	enum billing_result res;

	if (!p)
		return -1;
	if (!j)
		return 0;
	ss.anchor = o->anchor;
	ss.anchor_period = o->anchor_period;
	ss.period = o->period;
	ss.cycles_done = o->cycles_done;
	ss.attempts = o->attempts;
	/* the database allows only these names (migrations/0001_initial.sql) */
	ss.state = (enum billing_state)billing_state_parse(o->state);
	ss.next_charge_at = o->next_charge_at;
	res = interpret(j);
	billing_apply(p, &ss, res, j->now);

	charges_outcomes_add(&b->charges, j->charge_id, charge_state(res),
	                     res == BILLING_SUCCEEDED ? j->res.order.pay_order_id : NULL,
	                     j->res.order.trans_id, j->res.has_order ? j->res.order.status : -1,
	                     ret_msg(j, res), j->res.order.pay_succ_time, j->now);
	/* The subscription moves only with an attempt for its current period. */
	if (res != BILLING_UNKNOWN && res != BILLING_ABSENT && o->charge_period == o->period)
		subscriptions_moves_add(&b->subs, o->subscription_id, ss.period,
		                        billing_state_names[ss.state], ss.attempts, ss.cycles_done,
		                        ss.next_charge_at,
		                        res == BILLING_SUCCEEDED ? ss.period_start : 0,
		                        res == BILLING_SUCCEEDED ? ss.period_end : 0);
	if (res == BILLING_DECLINED && j->res.reason == GW_R_NOT_BOUND) {
		db_arr_str(&b->rebind, j->customer_id);
		b->nrebind++;
	}
	j->recorded = 1;
	j->result = res;
	j->sub_state = billing_state_names[ss.state];
	return 0;
}

static int write_batch(PGconn *db, struct batch *b, int64_t now, char *err, size_t errlen)
{
	if (charges_outcomes_write(db, &b->charges, err, errlen) < 0 ||
	    subscriptions_moves_write(db, &b->subs, err, errlen) < 0)
		return -1;
	if (b->nrebind && customers_flag_recheck(db, db_arr_text(&b->rebind), now, err, errlen) < 0)
		return -1;
	return 0;
}

/* Records jobs[0..n) in one transaction; reports them once committed.
 * Jobs whose lease this process lost are dropped: their new owner resolves
 * them with cc_query. On failure nothing is written and the charges stay
 * pending until their lease ends. */
static int record_batch(struct recorder *rec, struct rec_job **jobs, int n, struct sched_stats *st,
                        char *err, size_t errlen)
{
	struct db_arr ids = {0};
	struct batch b = {.rec = rec, .jobs = jobs, .njobs = n};
	int rc = -1;

	for (int i = 0; i < n; i++)
		jobs[i]->recorded = 0;
	if (db_is_down(rec->db)) {
		PQfinish(rec->db);
		rec->db = db_connect(rec->cfg->database_url, rec->owner, err, errlen);
		if (!rec->db)
			goto out;
	}
	for (int i = 0; i < n; i++)
		db_arr_i64(&ids, jobs[i]->charge_id);
	/* Asynchronous commit: an outcome a crash loses leaves its charge open,
	 * and its lease's end has it resolved with cc_query. */
	if (db_begin_batch(rec->db, jobs[n - 1]->now, err, errlen) < 0)
		goto out;
	if (charges_lock_owned(rec->db, db_arr_text(&ids), rec->owner, add_to_batch, &b, err,
	                       errlen) < 0)
		goto rollback;
	/* the rebinding flag's time: the latest attempt's billing clock */
	if (write_batch(rec->db, &b, jobs[n - 1]->now, err, errlen) < 0 ||
	    db_commit(rec->db, err, errlen) < 0)
		goto rollback;
	for (int i = 0; i < n; i++)
		if (jobs[i]->recorded)
			report_outcome(jobs[i], st);
	rc = 0;
	goto out;
rollback:
	db_rollback(rec->db);
out:
	batch_free(&b);
	db_arr_free(&ids);
	return rc;
}

/* Records jobs[0..n) as one batch, or, when the database refuses the
 * batch, each alone: one bad row must not lose the others' outcomes.
 * A job that cannot be recorded stays open (pending) for cc_query, so it
 * is never sent again. Frees the jobs. */
static int record(struct recorder *rec, struct rec_job **jobs, int n, struct sched_stats *st,
                  char *err, size_t errlen)
{
	int rc = record_batch(rec, jobs, n, st, err, errlen);

	if (rc < 0 && n > 1 && !db_is_down(rec->db)) {
		char one[512];

		log_event("warn", "record", "detail",
		          "batch refused: recording its outcomes one by one", "error", err,
		          (char *)NULL);
		rc = 0;
		for (int i = 0; i < n; i++)
			if (record_batch(rec, &jobs[i], 1, st, one, sizeof(one)) < 0) {
				if (rc == 0)
					snprintf(err, errlen, "%s", one);
				rc = -1;
				log_event("error", "record", "mch_order_no", jobs[i]->mch_order_no,
				          "error", one, (char *)NULL);
			}
	}
	for (int i = 0; i < n; i++)
		free(jobs[i]);
	return rc;
}

/* Outcomes are gathered for up to GATHER_MS after the first, or until a
 * claim's worth (billing.batch_size) have answered, before they are
 * written: with a gateway at 20 ms they come back a few at a time, and a
 * transaction with its statement triggers costs the database about as much
 * to begin and end as dozens of outcomes cost to write. The delay is far
 * inside any lease, and an answered request's slot is already free for the
 * next claim; a pass's end (recorder_flush) writes what is queued at once.
 * Called with mu held. */
#define GATHER_MS 50
static void gather(struct recorder *rec)
{
	int enough = rec->cfg->batch_size;
	struct timespec until = deadline(GATHER_MS);

	while (rec->queue.n < enough && !rec->quit && !rec->flushing &&
	       pthread_cond_timedwait(&rec->cv, &rec->mu, &until) == 0)
		;
}

static void *recorder_main(void *arg)
{
	struct recorder *rec = arg;

	pthread_mutex_lock(&rec->mu);
	for (;;) {
		struct rec_jobs batch;
		struct sched_stats st = {0};
		char err[512];
		int rc;

		while (rec->queue.n == 0 && !rec->quit)
			pthread_cond_wait(&rec->cv, &rec->mu);
		if (rec->queue.n == 0)
			break;
		gather(rec);
		batch = rec->queue;
		memset(&rec->queue, 0, sizeof(rec->queue));
		rec->writing = batch.n;
		pthread_mutex_unlock(&rec->mu);
		rc = record(rec, batch.v, batch.n, &st, err, sizeof(err));
		free(batch.v);
		if (rc < 0)
			log_event("error", "record", "error", err, (char *)NULL);
		pthread_mutex_lock(&rec->mu);
		rec->writing = 0;
		backlog_changed(rec);
		rec->stats.succeeded += st.succeeded;
		rec->stats.declined += st.declined;
		rec->stats.absent += st.absent;
		rec->stats.unknown += st.unknown;
		rec->stats.auth += st.auth;
		if (rc < 0 && !rec->failed) {
			rec->failed = 1;
			snprintf(rec->err, sizeof(rec->err), "%s", err);
		}
		pthread_cond_broadcast(&rec->cv);
	}
	pthread_mutex_unlock(&rec->mu);
	return NULL;
}

int recorder_flush(struct recorder *rec, struct sched_stats *st, char *err, size_t errlen)
{
	int rc = 0;

	pthread_mutex_lock(&rec->mu);
	rec->flushing = 1;
	pthread_cond_broadcast(&rec->cv);
	while (rec->queue.n > 0 || rec->writing)
		pthread_cond_wait(&rec->cv, &rec->mu);
	rec->flushing = 0;
	if (st) {
		st->succeeded += rec->stats.succeeded;
		st->declined += rec->stats.declined;
		st->absent += rec->stats.absent;
		st->unknown += rec->stats.unknown;
		st->auth += rec->stats.auth;
	}
	memset(&rec->stats, 0, sizeof(rec->stats));
	if (rec->failed) {
		snprintf(err, errlen, "%s", rec->err);
		rec->failed = 0;
		rc = -1;
	}
	pthread_mutex_unlock(&rec->mu);
	return rc;
}
