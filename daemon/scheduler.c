/* scheduler.c: the charge protocol.
 *
 * A pass claims work in the database, sends it through the asynchronous
 * gateway client and records each batch of outcomes in one transaction:
 *  1. A due subscription is claimed and its charge intent (with a
 *     mch_order_no derived from subscription, period and attempt) committed
 *     in one statement, before any byte goes to the gateway.
 *  2. The outcome is recorded with the subscription's advance or dunning
 *     step in one transaction, and only by the lease owner.
 *  3. Unknown outcomes and abandoned leases are resolved with cc_query before
 *     anything new is sent for that subscription (the database allows one
 *     open attempt per subscription); only proven absence allows a new
 *     attempt, with a new mch_order_no.
 * The database enforces the invariants; this file never relies on the
 * gateway refusing a duplicate mch_order_no.
 *
 * Two threads: the pass's own drives the gateway and claims; a recorder
 * thread, on a connection of its own, writes outcomes as they arrive, so
 * that the gateway never waits for the ledger. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <signal.h>

#include "calendar.h"
#include "db.h"
#include "log.h"
#include "metrics.h"
#include "plans.h"
#include "scheduler.h"

#define BUSY_RETRY_SECONDS      60
#define BINDING_CHECKS_PER_PASS 16

struct job {
	struct sched *s;
	int64_t charge_id;
	int64_t amount;
	int64_t now; /* the billing clock when it was sent */
	int is_query;
	char mch_order_no[31];
	char customer_id[31];
	char sub_id[24];
	struct gw_result res;
	/* filled when recorded */
	int recorded;
	enum sched_result result;
	char sub_state[12];
};

/* Completed jobs, handed from the pass's thread to the recorder. */
struct recorder {
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct job **queue;
	int n, cap;
	int busy, quit;
	PGconn *db;
	struct plan *plans; /* cache: plan versions never change */
	int nplans;
	struct sched_stats stats; /* since the last flush */
	int failed;
	char err[512];
};

struct sched {
	const struct cfg *cfg;
	PGconn *db;
	struct gw_client *gw;
	struct gw_multi *multi;
	char owner[96];
	char resolve_cutoff[48]; /* database time at the start of sched_resolve */
	volatile sig_atomic_t stopping;
	struct recorder rec;
};

static void *recorder_main(void *arg);

struct sched *sched_new(const struct cfg *cfg, PGconn *db, struct gw_client *gw, const char *owner)
{
	struct sched *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->cfg = cfg;
	s->db = db;
	s->gw = gw;
	snprintf(s->owner, sizeof(s->owner), "%s", owner);
	pthread_mutex_init(&s->rec.mu, NULL);
	pthread_cond_init(&s->rec.cv, NULL);
	s->multi = gw_multi_new(gw, cfg->gateway.max_in_flight);
	if (!s->multi || pthread_create(&s->rec.thread, NULL, recorder_main, s) != 0) {
		gw_multi_free(s->multi);
		free(s);
		return NULL;
	}
	return s;
}

void sched_free(struct sched *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->rec.mu);
	s->rec.quit = 1;
	pthread_cond_broadcast(&s->rec.cv);
	pthread_mutex_unlock(&s->rec.mu);
	pthread_join(s->rec.thread, NULL);
	gw_multi_free(s->multi);
	for (int i = 0; i < s->rec.n; i++)
		free(s->rec.queue[i]);
	free(s->rec.queue);
	free(s->rec.plans);
	PQfinish(s->rec.db);
	pthread_mutex_destroy(&s->rec.mu);
	pthread_cond_destroy(&s->rec.cv);
	free(s);
}

void sched_set_db(struct sched *s, PGconn *db)
{
	s->db = db;
}

void sched_stop(struct sched *s)
{
	s->stopping = 1;
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

/* ---- the billing rules ---- */

void sched_apply(const struct plan *p, struct sched_sub *ss, enum sched_result r, int64_t now)
{
	int k = ss->period - ss->anchor_period;
	/* An admin's pause or cancel made while the charge was in flight stands. */
	char was[sizeof(ss->state)];
	int halted = strcmp(ss->state, "paused") == 0 || strcmp(ss->state, "canceled") == 0 ||
	             strcmp(ss->state, "ended") == 0;

	memcpy(was, ss->state, sizeof(was));

	switch (r) {
	case SR_SUCCEEDED:
		ss->period_start = cal_period_start(ss->anchor, p->interval, p->interval_count, k);
		ss->period_end =
		    cal_period_start(ss->anchor, p->interval, p->interval_count, k + 1);
		ss->period++;
		ss->cycles_done++;
		ss->attempts = 0;
		if (p->cycles > 0 && ss->cycles_done >= p->cycles) {
			snprintf(ss->state, sizeof(ss->state), "ended");
			ss->next_charge_at = 0;
		} else {
			snprintf(ss->state, sizeof(ss->state), "active");
			ss->next_charge_at = ss->period_end;
		}
		break;
	case SR_DECLINED:
		ss->attempts++;
		if (ss->attempts <= p->nretry) {
			snprintf(ss->state, sizeof(ss->state), "past_due");
			ss->next_charge_at = cal_add(now, p->retry[ss->attempts - 1]);
			break;
		}
		ss->next_charge_at = 0;
		snprintf(ss->state, sizeof(ss->state), "%s",
		         p->on_exhausted == PLAN_CANCEL  ? "canceled"
		         : p->on_exhausted == PLAN_PAUSE ? "paused"
		                                         : "past_due");
		break;
	case SR_BUSY:
		/* The gateway did not process it: not the customer's decline. */
		ss->next_charge_at = now + BUSY_RETRY_SECONDS;
		break;
	case SR_ABSENT:
	case SR_UNKNOWN:
		return;
	}
	if (halted) {
		memcpy(ss->state, was, sizeof(was));
		ss->next_charge_at = 0;
	}
}

/* ---- claiming ---- */

static const char SQL_CLAIM_DUE[] =
    "WITH due AS ("
    "  SELECT s.id, s.customer_id, s.plan_id, s.period FROM subscriptions s"
    "   WHERE s.next_charge_at <= to_timestamp($1)"
    "     AND s.state IN ('trialing', 'active', 'past_due')"
    "     AND ($4::bigint IS NULL OR s.id = $4::bigint)"
    "     AND EXISTS (SELECT 1 FROM customers cu WHERE cu.customer_id = s.customer_id"
    "                  AND cu.state = 'bound')"
    "     AND NOT EXISTS (SELECT 1 FROM charges c WHERE c.subscription_id = s.id"
    "                      AND c.state IN ('pending', 'unknown'))"
    "   ORDER BY s.next_charge_at LIMIT $2"
    "   FOR UPDATE OF s SKIP LOCKED)"
    " INSERT INTO charges (mch_order_no, kind, subscription_id, period, attempt, customer_id,"
    "                      plan_id, amount_cents, lease_owner, lease_expires_at)"
    " SELECT $3 || d.id || '-' || d.period || '-' || a.n, 'subscription', d.id, d.period, a.n,"
    "        d.customer_id, d.plan_id, p.amount_cents, $5,"
    "        now() + make_interval(secs => $6::int)"
    "   FROM due d JOIN plans p ON p.id = d.plan_id"
    "   CROSS JOIN LATERAL (SELECT coalesce(max(attempt), 0) + 1 AS n FROM charges c"
    "                        WHERE c.subscription_id = d.id AND c.period = d.period) a"
    " ON CONFLICT DO NOTHING"
    " RETURNING id, mch_order_no, subscription_id, customer_id, amount_cents";

/* Unknown outcomes, and pending ones whose owner's lease ran out (a dead
 * process): claimed for a cc_query. */
static const char SQL_CLAIM_UNRESOLVED[] =
    "UPDATE charges SET lease_owner = $1, lease_expires_at = now() + make_interval(secs => "
    "$2::int)"
    " WHERE id IN (SELECT id FROM charges"
    "               WHERE state IN ('pending', 'unknown') AND lease_expires_at <= $4::timestamptz"
    "                 AND kind = 'subscription'"
    "               ORDER BY lease_expires_at LIMIT $3 FOR UPDATE SKIP LOCKED)"
    " RETURNING id, mch_order_no, subscription_id, customer_id, amount_cents";

/* Called in the pass's thread as each request completes. */
static void job_done(void *udata, const struct gw_result *res)
{
	struct job *j = udata;
	struct recorder *rec = &j->s->rec;

	j->res = *res;
	metrics_gateway_observe(res->seconds);
	pthread_mutex_lock(&rec->mu);
	if (rec->n == rec->cap) {
		int cap = rec->cap ? rec->cap * 2 : 64;
		struct job **q = realloc(rec->queue, (size_t)cap * sizeof(*q));
		if (!q)
			abort(); /* the outcome must not be dropped silently */
		rec->queue = q;
		rec->cap = cap;
	}
	rec->queue[rec->n++] = j;
	pthread_cond_signal(&rec->cv);
	pthread_mutex_unlock(&rec->mu);
}

/* Sends every claimed row of r (columns of SQL_CLAIM_*). Returns the count. */
static int submit_claimed(struct sched *s, PGresult *r, int is_query, int64_t now)
{
	int n = PQntuples(r);

	for (int i = 0; i < n; i++) {
		struct job *j = calloc(1, sizeof(*j));
		struct gw_request req = {0};
		struct gw_result res;

		if (!j)
			abort();
		j->s = s;
		j->charge_id = db_i64(r, i, 0);
		snprintf(j->mch_order_no, sizeof(j->mch_order_no), "%s", db_str(r, i, 1));
		snprintf(j->sub_id, sizeof(j->sub_id), "%s", db_str(r, i, 2));
		snprintf(j->customer_id, sizeof(j->customer_id), "%s", db_str(r, i, 3));
		j->amount = db_i64(r, i, 4);
		j->now = now;
		j->is_query = is_query;
		req.call = is_query ? GW_QUERY : GW_PURCHASE_TOKEN;
		req.mch_order_no = j->mch_order_no;
		if (!is_query) {
			req.customer_id = j->customer_id;
			req.amount = j->amount;
			req.subject = "Subscription";
		}
		if (gw_multi_submit(s->multi, &req, job_done, j, &res) == GW_INVALID) {
			/* Refused before sending: nothing left this process. The
			 * intent stays pending and is resolved when its lease ends. */
			log_event("error", "charge_refused", "subscription", j->sub_id,
			          "mch_order_no", j->mch_order_no, "error", res.detail,
			          (char *)NULL);
			free(j);
		}
	}
	metrics_in_flight(gw_multi_pending(s->multi));
	return n;
}

static int claim(struct sched *s, const char *sql, int nparams, const char *const *p, int is_query,
                 int64_t now, char *err, size_t errlen)
{
	PGresult *r = db_query(s->db, sql, nparams, p, err, errlen);
	int n;

	if (!r)
		return -1;
	n = submit_claimed(s, r, is_query, now);
	PQclear(r);
	return n;
}

static int claim_due(struct sched *s, int64_t now, const char *only_sub, int limit, char *err,
                     size_t errlen)
{
	char t[24], lim[16], lease[16];
	const char *p[6] = {t, lim, s->cfg->order_prefix, only_sub, s->owner, lease};

	snprintf(t, sizeof(t), "%lld", (long long)now);
	snprintf(lim, sizeof(lim), "%d", limit);
	snprintf(lease, sizeof(lease), "%d", s->cfg->lease_seconds);
	return claim(s, SQL_CLAIM_DUE, 6, p, 0, now, err, errlen);
}

static int claim_any_due(struct sched *s, int64_t now, int limit, char *err, size_t errlen)
{
	return claim_due(s, now, NULL, limit, err, errlen);
}

static int claim_unresolved(struct sched *s, int64_t now, int limit, char *err, size_t errlen)
{
	char lim[16], lease[16];
	const char *p[4] = {s->owner, lease, lim, s->resolve_cutoff};

	/* Leases run on the database's clock, not the billing clock. */
	snprintf(lim, sizeof(lim), "%d", limit);
	snprintf(lease, sizeof(lease), "%d", s->cfg->lease_seconds);
	return claim(s, SQL_CLAIM_UNRESOLVED, 4, p, 1, now, err, errlen);
}

/* ---- recording ---- */

/* What a gateway answer means for the charge. */
static enum sched_result interpret(const struct job *j)
{
	const struct gw_result *r = &j->res;

	if (j->is_query) {
		if (r->outcome == GW_FAIL)
			return SR_ABSENT;
		if (r->outcome != GW_SUCCESS || !r->has_order)
			return SR_UNKNOWN;
		if (r->order.status == 2 || r->order.status == 3)
			return SR_SUCCEEDED;
		/* 0 and 1: created or paying; wait for the final state. */
		return r->order.status <= 1 ? SR_UNKNOWN : SR_DECLINED;
	}
	switch (r->outcome) {
	case GW_SUCCESS:
		return SR_SUCCEEDED;
	case GW_FAIL:
		/* Not processed, and not the customer's doing: retried later
		 * without a dunning step (a wrong key must not dun everyone). */
		return strcasestr(r->ret_msg, "busy") || strcasestr(r->ret_msg, "sign error") ||
		               strcasestr(r->ret_msg, "mchId error")
		           ? SR_BUSY
		           : SR_DECLINED;
	default:
		return SR_UNKNOWN;
	}
}

static const char *charge_state(enum sched_result r)
{
	switch (r) {
	case SR_SUCCEEDED:
		return "succeeded";
	case SR_UNKNOWN:
		return "unknown";
	default:
		return "failed";
	}
}

static const char *result_name(enum sched_result r)
{
	static const char *names[] = {"success", "declined", "busy", "absent", "unknown"};
	return names[r];
}

/* A query that found the order carries its ids; a query that proved it
 * absent says so; otherwise the gateway's own message. */
static const char *ret_msg(const struct job *j, enum sched_result r)
{
	if (r == SR_ABSENT)
		return "not found at the gateway";
	if (r == SR_UNKNOWN)
		return j->res.detail[0] ? j->res.detail : j->res.ret_msg;
	return j->res.ret_msg;
}

static const char SQL_LOCK_OWNED[] =
    "SELECT c.id, s.id, s.plan_id, extract(epoch FROM s.anchor)::bigint, s.anchor_period,"
    "       s.period, s.cycles_done, s.attempts, s.state,"
    "       coalesce(extract(epoch FROM s.next_charge_at)::bigint, 0), c.period"
    "  FROM charges c JOIN subscriptions s ON s.id = c.subscription_id"
    " WHERE c.id = ANY($1::bigint[]) AND c.lease_owner = $2"
    "   AND c.state IN ('pending', 'unknown')"
    " FOR UPDATE OF c, s";

static const char SQL_SET_CHARGES[] =
    "UPDATE charges c SET state = u.state, pay_order_id = u.pay_order_id,"
    "       trans_id = u.trans_id, gateway_status = u.status, ret_msg = u.msg,"
    "       pay_succ_time = u.succ, lease_owner = NULL,"
    "       lease_expires_at = CASE WHEN u.state = 'unknown' THEN now() END"
    "  FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::int[], $6::text[],"
    "              $7::text[]) AS u(id, state, pay_order_id, trans_id, status, msg, succ)"
    " WHERE c.id = u.id";

static const char SQL_SET_SUBS[] =
    "UPDATE subscriptions s SET period = u.period, state = u.state, attempts = u.attempts,"
    "       cycles_done = u.cycles, next_charge_at = to_timestamp(u.next),"
    "       period_start = coalesce(to_timestamp(u.ps), s.period_start),"
    "       period_end = coalesce(to_timestamp(u.pe), s.period_end)"
    "  FROM unnest($1::bigint[], $2::int[], $3::text[], $4::int[], $5::int[], $6::bigint[],"
    "              $7::bigint[], $8::bigint[]) AS u(id, period, state, attempts, cycles, next,"
    "              ps, pe)"
    " WHERE s.id = u.id";

/* A decline for a binding reason: the daemon re-checks the binding. */
static const char SQL_FLAG_BINDINGS[] = "UPDATE customers SET next_check_at = to_timestamp($2)"
                                        " WHERE customer_id = ANY($1::text[]) AND state = 'bound'";

struct batch {
	struct db_arr ids;
	struct db_arr c_state, c_pay, c_trans, c_status, c_msg, c_succ;
	struct db_arr s_id, s_period, s_state, s_attempts, s_cycles, s_next, s_ps, s_pe;
	struct db_arr rebind;
	int ncharges, nsubs, nrebind;
};

static void batch_free(struct batch *b)
{
	struct db_arr *all[] = {&b->ids,      &b->c_state, &b->c_pay,      &b->c_trans,
	                        &b->c_status, &b->c_msg,   &b->c_succ,     &b->s_id,
	                        &b->s_period, &b->s_state, &b->s_attempts, &b->s_cycles,
	                        &b->s_next,   &b->s_ps,    &b->s_pe,       &b->rebind};
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		db_arr_free(all[i]);
}

static void opt_i64(struct db_arr *a, int64_t v)
{
	if (v)
		db_arr_i64(a, v);
	else
		db_arr_null(a);
}

static void opt_str(struct db_arr *a, const char *v)
{
	db_arr_str(a, v && v[0] ? v : NULL);
}

static struct job *find_job(struct job **jobs, int n, int64_t charge_id)
{
	for (int i = 0; i < n; i++)
		if (jobs[i]->charge_id == charge_id)
			return jobs[i];
	return NULL;
}

/* After the commit: the log line, the metric and the pass's counts. */
static void report_outcome(const struct job *j, struct sched_stats *st)
{
	enum sched_result r = j->result;
	char amount[24];

	snprintf(amount, sizeof(amount), "%lld", (long long)j->amount);
	log_event(r == SR_UNKNOWN ? "warn" : "info", j->is_query ? "charge_resolved" : "charge",
	          "subscription", j->sub_id, "mch_order_no", j->mch_order_no, "amount", amount,
	          "outcome", result_name(r), "pay_order_id", j->res.order.pay_order_id, "sub_state",
	          j->sub_state, "ret_msg", ret_msg(j, r), (char *)NULL);
	metrics_charge(r == SR_SUCCEEDED ? "success" : r == SR_UNKNOWN ? "unknown" : "fail");
	switch (r) {
	case SR_SUCCEEDED:
		st->succeeded++;
		break;
	case SR_DECLINED:
	case SR_BUSY:
		st->declined++;
		break;
	case SR_ABSENT:
		st->absent++;
		break;
	case SR_UNKNOWN:
		st->unknown++;
		break;
	}
}

/* Adds one owned charge (row i of the locked set) to the batch. */
static int add_to_batch(struct recorder *rec, struct batch *b, PGresult *r, int i,
                        struct job **jobs, int njobs, char *err, size_t errlen)
{
	struct job *j = find_job(jobs, njobs, db_i64(r, i, 0));
	const struct plan *p = plan_cached(rec, db_i64(r, i, 2), err, errlen);
	struct sched_sub ss = {0};
	enum sched_result res;
	char status[12];

	if (!p)
		return -1;
	if (!j)
		return 0;
	ss.anchor = db_i64(r, i, 3);
	ss.anchor_period = (int)db_i64(r, i, 4);
	ss.period = (int)db_i64(r, i, 5);
	ss.cycles_done = (int)db_i64(r, i, 6);
	ss.attempts = (int)db_i64(r, i, 7);
	snprintf(ss.state, sizeof(ss.state), "%s", db_str(r, i, 8));
	ss.next_charge_at = db_i64(r, i, 9);
	res = interpret(j);
	sched_apply(p, &ss, res, j->now);

	db_arr_i64(&b->ids, j->charge_id);
	db_arr_str(&b->c_state, charge_state(res));
	opt_str(&b->c_pay, res == SR_SUCCEEDED ? j->res.order.pay_order_id : NULL);
	opt_str(&b->c_trans, j->res.order.trans_id);
	snprintf(status, sizeof(status), "%d", j->res.order.status);
	db_arr_str(&b->c_status, j->res.has_order && j->res.order.status >= 0 ? status : NULL);
	opt_str(&b->c_msg, ret_msg(j, res));
	opt_str(&b->c_succ, j->res.order.pay_succ_time);
	b->ncharges++;
	/* The subscription moves only with an attempt for its current period. */
	if (res != SR_UNKNOWN && res != SR_ABSENT && db_i64(r, i, 10) == db_i64(r, i, 5)) {
		db_arr_i64(&b->s_id, db_i64(r, i, 1));
		db_arr_i64(&b->s_period, ss.period);
		db_arr_str(&b->s_state, ss.state);
		db_arr_i64(&b->s_attempts, ss.attempts);
		db_arr_i64(&b->s_cycles, ss.cycles_done);
		opt_i64(&b->s_next, ss.next_charge_at);
		opt_i64(&b->s_ps, res == SR_SUCCEEDED ? ss.period_start : 0);
		opt_i64(&b->s_pe, res == SR_SUCCEEDED ? ss.period_end : 0);
		b->nsubs++;
	}
	if (res == SR_DECLINED &&
	    (strcasestr(j->res.ret_msg, "bind") || strcasestr(j->res.ret_msg, "bound"))) {
		db_arr_str(&b->rebind, j->customer_id);
		b->nrebind++;
	}
	j->recorded = 1;
	j->result = res;
	memcpy(j->sub_state, ss.state, sizeof(j->sub_state));
	return 0;
}

static int write_batch(PGconn *db, struct batch *b, int64_t now, char *err, size_t errlen)
{
	char t[24];
	const char *pc[7] = {db_arr_text(&b->ids),      db_arr_text(&b->c_state),
	                     db_arr_text(&b->c_pay),    db_arr_text(&b->c_trans),
	                     db_arr_text(&b->c_status), db_arr_text(&b->c_msg),
	                     db_arr_text(&b->c_succ)};
	const char *ps[8] = {db_arr_text(&b->s_id),     db_arr_text(&b->s_period),
	                     db_arr_text(&b->s_state),  db_arr_text(&b->s_attempts),
	                     db_arr_text(&b->s_cycles), db_arr_text(&b->s_next),
	                     db_arr_text(&b->s_ps),     db_arr_text(&b->s_pe)};
	const char *pr[2] = {db_arr_text(&b->rebind), t};

	snprintf(t, sizeof(t), "%lld", (long long)now);
	if (b->ncharges && db_exec(db, SQL_SET_CHARGES, 7, pc, err, errlen) < 0)
		return -1;
	if (b->nsubs && db_exec(db, SQL_SET_SUBS, 8, ps, err, errlen) < 0)
		return -1;
	if (b->nrebind && db_exec(db, SQL_FLAG_BINDINGS, 2, pr, err, errlen) < 0)
		return -1;
	return 0;
}

/* Records jobs[0..n) in one transaction; reports them once committed.
 * Jobs whose lease this process lost are dropped: their new owner resolves
 * them with cc_query. On failure nothing is written and the charges stay
 * pending until their lease ends. Frees the jobs. */
static int record(struct sched *s, struct job **jobs, int n, struct sched_stats *st, char *err,
                  size_t errlen)
{
	struct recorder *rec = &s->rec;
	struct db_arr ids = {0};
	struct batch b = {0};
	PGresult *r = NULL;
	const char *p[2];
	int rc = -1;

	if (db_is_down(rec->db)) {
		PQfinish(rec->db);
		rec->db = db_connect(s->cfg->database_url, s->owner, err, errlen);
		if (!rec->db)
			goto out;
	}
	for (int i = 0; i < n; i++)
		db_arr_i64(&ids, jobs[i]->charge_id);
	p[0] = db_arr_text(&ids);
	p[1] = s->owner;
	if (db_set_now(rec->db, jobs[n - 1]->now, err, errlen) < 0 ||
	    db_begin(rec->db, err, errlen) < 0)
		goto out;
	r = db_query(rec->db, SQL_LOCK_OWNED, 2, p, err, errlen);
	if (!r)
		goto rollback;
	for (int i = 0; i < PQntuples(r); i++)
		if (add_to_batch(rec, &b, r, i, jobs, n, err, errlen) < 0)
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
	PQclear(r);
	batch_free(&b);
	db_arr_free(&ids);
	for (int i = 0; i < n; i++)
		free(jobs[i]);
	return rc;
}

static void *recorder_main(void *arg)
{
	struct sched *s = arg;
	struct recorder *rec = &s->rec;

	pthread_mutex_lock(&rec->mu);
	for (;;) {
		struct job **jobs;
		struct sched_stats st = {0};
		char err[512];
		int n, rc;

		while (rec->n == 0 && !rec->quit)
			pthread_cond_wait(&rec->cv, &rec->mu);
		if (rec->n == 0)
			break;
		jobs = rec->queue;
		n = rec->n;
		rec->queue = NULL;
		rec->n = rec->cap = 0;
		rec->busy = 1;
		pthread_mutex_unlock(&rec->mu);
		rc = record(s, jobs, n, &st, err, sizeof(err));
		free(jobs);
		if (rc < 0)
			log_event("error", "record", "error", err, (char *)NULL);
		pthread_mutex_lock(&rec->mu);
		rec->busy = 0;
		rec->stats.succeeded += st.succeeded;
		rec->stats.declined += st.declined;
		rec->stats.absent += st.absent;
		rec->stats.unknown += st.unknown;
		if (rc < 0 && !rec->failed) {
			rec->failed = 1;
			snprintf(rec->err, sizeof(rec->err), "%s", err);
		}
		pthread_cond_broadcast(&rec->cv);
	}
	pthread_mutex_unlock(&rec->mu);
	return NULL;
}

/* Waits until every completed job is recorded; adds the counts to st.
 * -1 with err if a batch could not be written since the last flush. */
static int flush(struct sched *s, struct sched_stats *st, char *err, size_t errlen)
{
	struct recorder *rec = &s->rec;
	int rc = 0;

	pthread_mutex_lock(&rec->mu);
	while (rec->n > 0 || rec->busy)
		pthread_cond_wait(&rec->cv, &rec->mu);
	if (st) {
		st->succeeded += rec->stats.succeeded;
		st->declined += rec->stats.declined;
		st->absent += rec->stats.absent;
		st->unknown += rec->stats.unknown;
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

/* How many to claim: no more than can be sent at once. A claimed request
 * waiting in the queue for a connection spends its lease before any byte
 * leaves; another daemon could then take the lease over, find the order
 * absent and charge again while this one still sends it. It also keeps a
 * stop prompt and what a crash leaves to expire small. */
static int claimable(struct sched *s)
{
	int free_slots = s->cfg->gateway.max_in_flight - gw_multi_pending(s->multi);

	return free_slots < s->cfg->batch_size ? free_slots : s->cfg->batch_size;
}

typedef int (*claim_fn)(struct sched *s, int64_t now, int limit, char *err, size_t errlen);

/* Keeps max_in_flight requests going while claim (may be NULL) finds work,
 * then finishes what is in flight and waits for the recorder. A claim is
 * made as soon as a sixteenth of the slots is free: small enough to keep
 * the gateway busy, large enough that a statement carries several charges
 * (measured with make bench). Returns how many were claimed, or -1. */
static int pump(struct sched *s, claim_fn claim, int64_t now, struct sched_stats *st, char *err,
                size_t errlen)
{
	int chunk = s->cfg->gateway.max_in_flight / 16 + 1, more = claim != NULL, claimed = 0;

	for (;;) {
		int room = claimable(s), idle = gw_multi_pending(s->multi) == 0;

		if (more && !s->stopping && room > 0 && (room >= chunk || idle)) {
			int n = claim(s, now, room, err, errlen);
			if (n < 0)
				return -1;
			claimed += n;
			more = n == room;
			continue;
		}
		if (idle)
			break;
		if (gw_multi_run(s->multi, 100) < 0) {
			snprintf(err, errlen, "gateway client: internal error");
			return -1;
		}
		metrics_in_flight(gw_multi_pending(s->multi));
	}
	return flush(s, st, err, errlen) < 0 ? -1 : claimed;
}

/* ---- period boundaries and enrolment follow-up ---- */

static const char SQL_CANCEL_AT_END[] =
    "UPDATE subscriptions s SET state = 'canceled', next_charge_at = NULL"
    " WHERE cancel_at_period_end AND next_charge_at <= to_timestamp($1)"
    "   AND state IN ('trialing', 'active', 'past_due')"
    "   AND NOT EXISTS (SELECT 1 FROM charges c WHERE c.subscription_id = s.id"
    "                    AND c.state IN ('pending', 'unknown'))";

/* A plan change takes effect at the next period: that period starts the new
 * plan's calendar (anchored there) and its cycle count. */
static const char SQL_SWITCH_PLAN[] =
    "UPDATE subscriptions s SET plan_id = next_plan_id, next_plan_id = NULL,"
    "       anchor = next_charge_at, anchor_period = period, cycles_done = 0"
    " WHERE next_plan_id IS NOT NULL AND attempts = 0 AND next_charge_at <= to_timestamp($1)"
    "   AND state IN ('trialing', 'active', 'past_due')"
    "   AND NOT EXISTS (SELECT 1 FROM charges c WHERE c.subscription_id = s.id"
    "                    AND c.state IN ('pending', 'unknown'))";

static const char SQL_EXPIRE_ENROLMENTS[] =
    "UPDATE customers SET state = 'failed', next_check_at = NULL"
    " WHERE state = 'pending' AND enrol_expires_at <= to_timestamp($1)";

/* Claimed by pushing the next check out (doubling from 5 minutes, at most
 * 6 hours), so that other daemons skip them. */
static const char SQL_CLAIM_CHECKS[] =
    "UPDATE customers SET checks_done = checks_done + 1,"
    "       next_check_at = to_timestamp($1)"
    "                     + make_interval(secs => least(300 * 2 ^ least(checks_done, 10), 21600))"
    " WHERE customer_id IN (SELECT customer_id FROM customers"
    "                        WHERE next_check_at <= to_timestamp($1)"
    "                          AND state IN ('pending', 'bound')"
    "                        ORDER BY next_check_at LIMIT $2 FOR UPDATE SKIP LOCKED)"
    " RETURNING customer_id, state";

static const char SQL_BOUND[] =
    "UPDATE customers SET state = 'bound', next_check_at = NULL, checks_done = 0"
    " WHERE customer_id = $1 AND state IN ('pending', 'bound')";

static const char SQL_UNBOUND[] = "UPDATE customers SET state = 'unbound', next_check_at = NULL"
                                  " WHERE customer_id = $1 AND state = 'bound'";

static int boundaries(struct sched *s, int64_t now, char *err, size_t errlen)
{
	char t[24];
	const char *p[1] = {t};

	snprintf(t, sizeof(t), "%lld", (long long)now);
	if (db_exec(s->db, SQL_CANCEL_AT_END, 1, p, err, errlen) < 0 ||
	    db_exec(s->db, SQL_SWITCH_PLAN, 1, p, err, errlen) < 0 ||
	    db_exec(s->db, SQL_EXPIRE_ENROLMENTS, 1, p, err, errlen) < 0)
		return -1;
	return 0;
}

static int check_bindings(struct sched *s, int64_t now, struct sched_stats *st, char *err,
                          size_t errlen)
{
	char t[24], lim[16];
	const char *p[2] = {t, lim};
	PGresult *r;

	snprintf(t, sizeof(t), "%lld", (long long)now);
	/* One at a time and synchronous: a few a pass, so that a slow gateway
	 * does not hold up charging. */
	snprintf(lim, sizeof(lim), "%d", BINDING_CHECKS_PER_PASS);
	r = db_query(s->db, SQL_CLAIM_CHECKS, 2, p, err, errlen);
	if (!r)
		return -1;
	for (int i = 0; i < PQntuples(r) && !s->stopping; i++) {
		const char *id = db_str(r, i, 0);
		const char *q[1] = {id};
		struct gw_request req = {.call = GW_ISBINDING, .customer_id = id};
		struct gw_result res;
		enum gw_outcome o = gw_call(s->gw, &req, &res);
		int rc = 0;

		if (o == GW_SUCCESS)
			rc = db_exec(s->db, SQL_BOUND, 1, q, err, errlen);
		else if (o == GW_FAIL && strcmp(db_str(r, i, 1), "bound") == 0)
			rc = db_exec(s->db, SQL_UNBOUND, 1, q, err, errlen);
		log_event("info", "binding_check", "customer", id, "was", db_str(r, i, 1),
		          "outcome", gw_outcome_name(o), (char *)NULL);
		if (st)
			st->bindings++;
		if (rc < 0) {
			PQclear(r);
			return -1;
		}
	}
	PQclear(r);
	return 0;
}

/* ---- passes ---- */

int sched_resolve(struct sched *s, int64_t now, struct sched_stats *st, char *err, size_t errlen)
{
	/* Each is queried once: an outcome still unknown becomes claimable
	 * again only after this cutoff, that is in a later pass. */
	PGresult *r = db_query(s->db, "SELECT clock_timestamp()", 0, NULL, err, errlen);

	if (!r)
		return -1;
	snprintf(s->resolve_cutoff, sizeof(s->resolve_cutoff), "%s", db_str(r, 0, 0));
	PQclear(r);
	return pump(s, claim_unresolved, now, st, err, errlen) < 0 ? -1 : 0;
}

int sched_pass(struct sched *s, int64_t now, struct sched_stats *st, char *err, size_t errlen)
{
	int n;

	/* Unknowns first: their subscriptions get nothing new until resolved. */
	if (db_set_now(s->db, now, err, errlen) < 0 || boundaries(s, now, err, errlen) < 0 ||
	    sched_resolve(s, now, st, err, errlen) < 0)
		return -1;
	n = pump(s, claim_any_due, now, st, err, errlen);
	if (n < 0)
		return -1;
	if (st)
		st->claimed += n;
	if (s->stopping)
		return 0;
	return check_bindings(s, now, st, err, errlen);
}

static const char SQL_MAKE_DUE[] =
    "UPDATE subscriptions s SET next_charge_at = to_timestamp($2)"
    " WHERE id = $1 AND state IN ('trialing', 'active', 'past_due')"
    "   AND EXISTS (SELECT 1 FROM customers cu WHERE cu.customer_id = s.customer_id"
    "                AND cu.state = 'bound')"
    "   AND NOT EXISTS (SELECT 1 FROM charges c WHERE c.subscription_id = s.id"
    "                    AND c.state IN ('pending', 'unknown'))"
    " RETURNING id";

static const char SQL_WHY_NOT_DUE[] =
    "SELECT s.state, cu.state,"
    "       EXISTS (SELECT 1 FROM charges c WHERE c.subscription_id = s.id"
    "                AND c.state IN ('pending', 'unknown'))"
    "  FROM subscriptions s JOIN customers cu ON cu.customer_id = s.customer_id"
    " WHERE s.id = $1";

static const char SQL_LAST_ATTEMPT[] =
    "SELECT mch_order_no, state, coalesce(ret_msg, '') FROM charges"
    " WHERE subscription_id = $1 ORDER BY id DESC LIMIT 1";

static void why_not(struct sched *s, const char *id, char *err, size_t errlen)
{
	const char *p[1] = {id};
	PGresult *r = db_query(s->db, SQL_WHY_NOT_DUE, 1, p, err, errlen);

	if (!r)
		return;
	if (PQntuples(r) == 0)
		snprintf(err, errlen, "unknown subscription %s", id);
	else if (strcmp(db_str(r, 0, 2), "t") == 0)
		snprintf(err, errlen,
		         "subscription %s has a charge whose outcome is not known yet: it is "
		         "resolved with cc_query first",
		         id);
	else if (strcmp(db_str(r, 0, 1), "bound") != 0)
		snprintf(err, errlen, "subscription %s: its customer's card is %s, not bound", id,
		         db_str(r, 0, 1));
	else
		snprintf(err, errlen, "subscription %s is %s: nothing to charge", id,
		         db_str(r, 0, 0));
	PQclear(r);
}

int sched_charge_now(struct sched *s, int64_t subscription_id, int64_t now, char *mch_order_no,
                     size_t len, char *err, size_t errlen)
{
	char id[24], t[24];
	const char *p[2] = {id, t};
	PGresult *r;
	int n, rc = GW_INVALID;

	snprintf(id, sizeof(id), "%lld", (long long)subscription_id);
	snprintf(t, sizeof(t), "%lld", (long long)now);
	mch_order_no[0] = '\0';
	r = db_query(s->db, SQL_MAKE_DUE, 2, p, err, errlen);
	if (!r)
		return GW_INVALID;
	n = PQntuples(r);
	PQclear(r);
	if (n == 0) {
		why_not(s, id, err, errlen);
		return GW_INVALID;
	}
	n = claim_due(s, now, id, 1, err, errlen);
	if (n <= 0) {
		if (n == 0)
			why_not(s, id, err, errlen);
		return GW_INVALID;
	}
	if (pump(s, NULL, now, NULL, err, errlen) < 0)
		return GW_INVALID;
	r = db_query(s->db, SQL_LAST_ATTEMPT, 1, p, err, errlen);
	if (!r)
		return GW_INVALID;
	if (PQntuples(r)) {
		const char *st = db_str(r, 0, 1);
		snprintf(mch_order_no, len, "%s", db_str(r, 0, 0));
		rc = strcmp(st, "succeeded") == 0 ? GW_SUCCESS
		     : strcmp(st, "failed") == 0  ? GW_FAIL
		                                  : GW_UNKNOWN;
		snprintf(err, errlen, "%s", db_str(r, 0, 2));
	}
	PQclear(r);
	return rc;
}
