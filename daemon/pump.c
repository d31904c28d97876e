/* pump.c: the claim pump. One thread keeps max_in_flight gateway requests
 * going: as slots free up it claims more work (charges.h commits each
 * intent in the claiming statement, before any byte leaves), sends it
 * through gw_multi and hands each answer to the recorder thread. A claim
 * runs on the database while requests travel: its charges join a short
 * queue from which each free slot is filled. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "charges.h"
#include "db.h"
#include "failover.h"
#include "log.h"
#include "metrics.h"
#include "owner_lock.h"
#include "pump.h"
#include "recorder.h"
#include "wave.h"

/* A charge's request leaves within SEND_WITHIN_MS of the start of its
 * claim, or not at all, so that no answer to it can come later than
 * gateway.timeout_ms + ANSWER_MARGIN_MS after its claim's created_at: then
 * it may be resolved as soon as its owner's lock is free (docs/design.md,
 * "The owner lock"). */
#define SEND_WITHIN_MS   2000
#define ANSWER_MARGIN_MS 5000

/* Claimed charges wait in the queue for a slot about QUEUED_MS at most, at
 * the gateway's recent pace: far inside SEND_WITHIN_MS, and enough that a
 * claim carries a few dozen charges while the slots stay full, instead of
 * the few freed since the last one (docs/design.md, "What a charge costs
 * the database"). */
#define QUEUED_MS 250

struct claiming {
	struct pump *p;
	int is_query;
	int64_t now;
	long long t0;               /* monotonic ms before the claim */
	int limit;                  /* how many were asked for */
	struct charges_cursor *cur; /* NULL: a claim with no cursor */
	struct charges_cursor one;  /* the cursor of a claim of one subscription */
};

struct pump {
	const struct cfg *cfg;
	char owner[96];
	struct owner_lock *lock; /* NULL: claims without one (billctl) */
	struct gw_multi *multi;
	struct recorder *rec;
	struct failover_recent *recent; /* what was sent: re-inserted after a failover */
	int probing;                    /* ask cc_query before each charge */
	struct rec_job *to_send;        /* probed and proven absent */
	struct charges_cursor cursor;   /* the due claims of this pump_run */
	struct wave wave;
	struct rec_jobs held;                 /* answers of a streak not decided yet (wave.h) */
	int stopped;                          /* a wave stopped this pump_run's claims */
	struct rec_job *queued, **queued_end; /* claimed, waiting for a slot */
	int nqueued;
	int claiming; /* a claim was sent and its answer not read */
	struct claiming claim;
	double latency; /* the gateway's recent answers, seconds (0: none yet) */
};

/* A job sent: the recorder frees it as a rec_job (its first member). */
struct sent {
	struct rec_job job;
	struct pump *p;
	long long claimed; /* monotonic ms before its claim */
};

struct pump *pump_new(const struct cfg *cfg, struct gw_client *gw, const char *owner)
{
	struct pump *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	p->cfg = cfg;
	snprintf(p->owner, sizeof(p->owner), "%s", owner);
	p->multi = gw_multi_new(gw, cfg->gateway.max_in_flight);
	p->recent = failover_recent_new(cfg->lease_seconds);
	p->queued_end = &p->queued;
	p->rec = p->multi && p->recent ? recorder_new(cfg, owner) : NULL;
	if (!p->rec) {
		gw_multi_free(p->multi);
		failover_recent_free(p->recent);
		free(p);
		return NULL;
	}
	return p;
}

/* The first queued charge, taken off the queue (NULL: none). */
static struct rec_job *queue_pop(struct pump *p)
{
	struct rec_job *j = p->queued;

	if (!j)
		return NULL;
	p->queued = j->next;
	if (!p->queued)
		p->queued_end = &p->queued;
	p->nqueued--;
	j->next = NULL;
	return j;
}

void pump_free(struct pump *p)
{
	/* requests still in flight are abandoned: their leases run out and a
	 * later pass resolves them */
	gw_multi_free(p->multi);
	recorder_free(p->rec);
	failover_recent_free(p->recent);
	while (p->to_send) {
		struct rec_job *j = p->to_send;

		p->to_send = j->next;
		free(j);
	}
	for (struct rec_job *j; (j = queue_pop(p));)
		free(j);
	rec_jobs_free(&p->held);
	free(p);
}

void pump_set_probing(struct pump *p, int on)
{
	p->probing = on;
}

int pump_restore_sent(struct pump *p, PGconn *db, char *err, size_t errlen)
{
	return failover_recent_restore(db, p->recent, err, errlen);
}

struct failover_recent *pump_take_sent(struct pump *p)
{
	struct failover_recent *r = p->recent;

	p->recent = NULL;
	return r;
}

void pump_give_sent(struct pump *p, struct failover_recent *r)
{
	if (!r)
		return;
	failover_recent_free(p->recent);
	p->recent = r;
}

static long long monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Hands the held answers to the recorder; in_wave: as not processed. */
static void release(struct pump *p, int in_wave)
{
	for (int i = 0; i < p->held.n; i++) {
		p->held.v[i]->wave = in_wave;
		recorder_push(p->held.v[i]);
	}
	p->held.n = 0;
}

/* Called in the pump's thread as each request completes. A charge's answer
 * that may belong to a wave waits until the wave is decided, so that nobody
 * is dunned for one. */
static void job_done(void *udata, const struct gw_result *res)
{
	struct sent *s = udata;
	struct rec_job *j = &s->job;
	struct pump *p = s->p;
	int restarted;

	if (j->probe) {
		int found = res->outcome == GW_SUCCESS && res->has_order;
		int absent = res->outcome == GW_FAIL && res->reason == GW_R_NOT_FOUND;

		if (j->probe > 1 && found) {
			/* A later attempt of the period exists: this one was
			 * never sent. Recorded absent, the next pass claims the
			 * next number and probes it. */
			j->probe = 0;
			j->is_query = 1;
			j->res = *res;
			j->res.outcome = GW_FAIL;
			j->res.reason = GW_R_NOT_FOUND;
			j->res.has_order = 0;
			memset(&j->res.order, 0, sizeof(j->res.order));
		} else if (absent) {
			/* Absent: the next numbers are asked too (a lost chain
			 * of attempts), then it is sent for real, once
			 * gw_multi_run returns. */
			j->probe = j->probe > FAILOVER_AHEAD ? 0 : j->probe + 1;
			j->next = p->to_send;
			p->to_send = j;
			return;
		} else {
			/* Paid (or declined) before the failover: recorded as
			 * the query's answer. Anything else proves nothing:
			 * unknown, resolved by a later cc_query. */
			j->res = *res;
			if (j->probe > 1 || res->outcome == GW_FAIL)
				j->res.outcome = GW_UNKNOWN;
			if (j->probe > 1) {
				j->res.has_order = 0;
				memset(&j->res.order, 0, sizeof(j->res.order));
			}
			j->probe = 0;
			j->is_query = 1;
		}
	} else {
		j->res = *res;
	}
	metrics_gateway_observe(res->seconds);
	p->latency = p->latency > 0 ? 0.9 * p->latency + 0.1 * res->seconds : res->seconds;
	if (res->reason == GW_R_AUTH || res->reason == GW_R_BUSY)
		metrics_gateway_error(gw_reason_name(res->reason));
	if (j->is_query) {
		recorder_push(j);
		return;
	}
	switch (wave_feed(&p->wave, j->customer_id,
	                  res->outcome == GW_FAIL && res->reason == GW_R_UNFAMILIAR, res->ret_msg,
	                  &restarted)) {
	case WAVE_NO:
		release(p, 0);
		recorder_push(j);
		break;
	case WAVE_HOLD:
		if (restarted)
			release(p, 0);
		rec_jobs_add(&p->held, j);
		break;
	case WAVE_ON:
		p->stopped = 1;
		rec_jobs_add(&p->held, j);
		release(p, 1);
		break;
	}
}

void pump_set_owner_lock(struct pump *p, struct owner_lock *lock)
{
	p->lock = lock;
}

int pump_wave_on(const struct pump *p)
{
	return p->wave.on;
}

/* Sends j: a cc_query when it is one (or a probe), else the charge, which
 * is remembered first (failover.h). */
static void send_job(struct pump *p, struct rec_job *j)
{
	struct gw_request req = {0};
	struct gw_result res;
	int query = j->is_query || j->probe;
	char ahead[sizeof(j->mch_order_no)];

	req.call = query ? GW_QUERY : GW_PURCHASE_TOKEN;
	req.mch_order_no = j->mch_order_no;
	if (j->probe > 1) {
		charges_attempt_after(j->mch_order_no, j->probe - 1, ahead, sizeof(ahead));
		req.mch_order_no = ahead;
	}
	if (!query && monotonic_ms() - ((struct sent *)j)->claimed > SEND_WITHIN_MS) {
		/* Claimed (or probed) too slowly for the margin: the intent
		 * stays pending, never sent, and its lease's end has it
		 * resolved. */
		log_event("warn", "charge_late", "subscription", j->sub_id, "mch_order_no",
		          j->mch_order_no, "detail", "not sent: claimed too long ago",
		          (char *)NULL);
		free(j);
		return;
	}
	if (!query) {
		req.customer_id = j->customer_id;
		req.amount = j->amount;
		req.subject = "Subscription";
		failover_recent_add(p->recent, j->mch_order_no, strtoll(j->sub_id, NULL, 10),
		                    j->customer_id, j->amount, j->now);
	}
	if (gw_multi_submit(p->multi, &req, job_done, j, &res) == GW_INVALID) {
		/* Refused before sending: nothing left this process. The intent
		 * stays pending and is resolved when its lease ends. */
		log_event("error", "charge_refused", "subscription", j->sub_id, "mch_order_no",
		          j->mch_order_no, "error", res.detail, (char *)NULL);
		free(j);
	}
}

/* Sends the charges that their probe proved absent. */
static void send_probed(struct pump *p)
{
	while (p->to_send) {
		struct rec_job *j = p->to_send;

		p->to_send = j->next;
		j->next = NULL;
		send_job(p, j);
	}
}

/* Queues one claimed charge for a slot (charges_claim_fn). */
static void queue_claimed(void *arg, const struct charges_claim *cl)
{
	const struct claiming *cg = arg;
	struct pump *p = cg->p;
	struct sent *s = calloc(1, sizeof(*s));
	struct rec_job *j = &s->job;

	if (!s)
		abort();
	s->p = p;
	s->claimed = cg->t0;
	j->rec = p->rec;
	j->charge_id = cl->id;
	memcpy(j->mch_order_no, cl->mch_order_no, sizeof(j->mch_order_no));
	snprintf(j->sub_id, sizeof(j->sub_id), "%lld", (long long)cl->subscription_id);
	memcpy(j->customer_id, cl->customer_id, sizeof(j->customer_id));
	j->amount = cl->amount_cents;
	j->now = cg->now;
	j->is_query = cg->is_query;
	j->probe = !cg->is_query && p->probing;
	*p->queued_end = j;
	p->queued_end = &j->next;
	p->nqueued++;
}

/* A wave stopped the claims: what is queued is not sent into it, and is
 * recorded as never sent (absent: its subscription stays as it is, and is
 * claimed again once the wave is over). */
static void keep_back_queued(struct pump *p)
{
	for (struct rec_job *j; (j = queue_pop(p));) {
		j->unsent = 1;
		recorder_push(j);
	}
}

/* Sends queued charges while a slot is free. */
static void send_queued(struct pump *p)
{
	while (p->queued && gw_multi_pending(p->multi) < p->cfg->gateway.max_in_flight)
		send_job(p, queue_pop(p));
}

/* Sends a claim of up to limit of what. 1: sent; 0: not, since this process
 * does not hold its lock; -1 with err. */
static int claim_send(struct pump *p, PGconn *db, const struct pump_work *what, int limit,
                      char *err, size_t errlen)
{
	struct charges_lease lease = {p->owner, p->cfg->lease_seconds};
	struct claiming *cg = &p->claim;

	/* Without its lock this process looks dead to the others, who resolve
	 * its pending charges once no answer can be in flight: it claims
	 * nothing until it has the lock again. */
	if (p->lock && !owner_lock_held(p->lock))
		return 0;
	*cg = (struct claiming){.p = p,
	                        .is_query = what->cutoff != NULL,
	                        .now = what->now,
	                        .t0 = monotonic_ms(),
	                        .limit = limit};
	cg->cur = what->cutoff ? NULL : what->only_sub ? &cg->one : &p->cursor;
	if ((what->cutoff
	         ? charges_claim_unresolved_send(
	               db, what->cutoff, (int64_t)p->cfg->gateway.timeout_ms + ANSWER_MARGIN_MS,
	               limit, &lease, err, errlen)
	         : charges_claim_due_send(db, what->now, what->only_sub, limit,
	                                  p->cfg->order_prefix, &lease, cg->cur, err, errlen)) < 0)
		return -1;
	p->claiming = 1;
	return 1;
}

/* Reads the sent claim's answer, waiting for it if need be, and queues its
 * charges. Returns how many, or -1 with err. */
static int claim_finish(struct pump *p, PGconn *db, char *err, size_t errlen)
{
	int n = charges_claimed(db, p->claim.cur, queue_claimed, &p->claim, err, errlen);

	p->claiming = 0;
	return n;
}

int pump_claim(struct pump *p, PGconn *db, const struct pump_work *what, int limit, char *err,
               size_t errlen)
{
	int sent = claim_send(p, db, what, limit, err, errlen);

	return sent <= 0 ? sent : claim_finish(p, db, err, errlen);
}

/* How many may be claimed: the free slots, plus what the gateway answers
 * in QUEUED_MS at its recent pace (ahead, at most twice the slots: larger
 * claims measured no cheaper), less what is queued already. Never more: a
 * charge waiting long for a slot spends its lease before any byte leaves;
 * another daemon could then take the lease over, find the order absent and
 * charge again while this one still sends it (the SEND_WITHIN_MS check
 * stops that). It also keeps a stop prompt and what a crash leaves to
 * expire small. Less again what the recorder holds beyond backlog_max():
 * a gateway faster than the database must not pile up outcomes in memory
 * (each holds a few kB) and in what a crash leaves open. */
static int backlog_max(const struct pump *p)
{
	return 2 * p->cfg->batch_size;
}

static int claimable(const struct pump *p, int *ahead)
{
	int slots = p->cfg->gateway.max_in_flight, room,
	    behind = recorder_backlog(p->rec) - backlog_max(p);

	*ahead = p->latency > 0 ? (int)(slots * (QUEUED_MS / 1000.0) / p->latency) : 0;
	if (*ahead > slots * 2)
		*ahead = slots * 2;
	room = slots - gw_multi_pending(p->multi) + *ahead - p->nqueued;
	if (behind > 0)
		room -= behind;
	return room < p->cfg->batch_size ? room : p->cfg->batch_size;
}

/* Keeps max_in_flight requests going while claim (may be NULL) finds work,
 * then finishes what is queued and in flight. A claim is sent once there
 * is room for two thirds of what may wait queued (or a sixteenth of the
 * slots, if more): large enough to carry many charges, early enough that
 * the queue does not run dry before its answer comes (measured with make
 * bench). Returns how many were claimed, or -1. */
static int keep_sending(struct pump *p, PGconn *db, const struct pump_work *what,
                        const volatile sig_atomic_t *stop, char *err, size_t errlen)
{
	int more = what != NULL, claimed = 0;

	for (;;) {
		if (p->stopped)
			keep_back_queued(p);
		send_probed(p);
		send_queued(p);
		if (p->claiming && db_ready(db) != 0) {
			/* its answer (or the connection's failure) is here */
			int n = claim_finish(p, db, err, errlen);

			if (n < 0)
				return -1;
			claimed += n;
			more = n == p->claim.limit;
			continue;
		}
		if (!p->claiming && more && !*stop && !p->stopped) {
			int ahead, room = claimable(p, &ahead), enough = ahead * 2 / 3,
			           idle = gw_multi_pending(p->multi) == 0 && !p->queued;

			if (enough < p->cfg->gateway.max_in_flight / 16 + 1)
				enough = p->cfg->gateway.max_in_flight / 16 + 1;
			if (room > 0 && (room >= enough || idle)) {
				int sent = claim_send(p, db, what, room, err, errlen);

				if (sent < 0)
					return -1;
				more = sent;
				continue;
			}
		}
		if (!p->claiming && gw_multi_pending(p->multi) == 0 && !p->queued) {
			if (!more || *stop || p->stopped)
				return claimed;
			/* idle with work left: only the recorder's backlog
			 * holds the claim back (claimable) */
			recorder_wait_below(p->rec, backlog_max(p) + 1, 100);
			continue;
		}
		if (gw_multi_wait(p->multi, 100, p->claiming ? PQsocket(db) : -1) < 0) {
			snprintf(err, errlen, "gateway client: internal error");
			return -1;
		}
		metrics_in_flight(gw_multi_pending(p->multi));
	}
}

/* keep_sending, then waits for the recorder. A pass's due claims are one
 * statement run hundreds of times with different numbers: planned again at
 * each run, planning cost the database a fifth of its time per charge
 * (docs/design.md, "What a charge costs the database"), so they run a
 * generic plan (its probes all by index, whatever the tables' sizes when it
 * was made). A failure to set or reset that only costs planning time. */
int pump_run(struct pump *p, PGconn *db, const struct pump_work *what,
             const volatile sig_atomic_t *stop, struct sched_stats *st, char *err, size_t errlen)
{
	char ignored[256];
	int claimed, generic = what && !what->cutoff;

	/* A subscription passed over (locked by another daemon's claim, or
	 * with an open charge) waits for the next pass. */
	p->cursor = (struct charges_cursor){0, 0};
	p->stopped = 0;
	if (generic)
		db_generic_plans(db, 1, ignored, sizeof(ignored));
	claimed = keep_sending(p, db, what, stop, err, errlen);
	/* a claim's answer is read even after a failure, so that the
	 * connection is free again and its charges are sent by the next run */
	if (p->claiming)
		claim_finish(p, db, ignored, sizeof(ignored));
	if (generic)
		db_generic_plans(db, 0, ignored, sizeof(ignored));
	/* a streak still undecided is too short to be a wave */
	release(p, 0);
	if (claimed < 0)
		return -1;
	return recorder_flush(p->rec, st, err, errlen) < 0 ? -1 : claimed;
}
