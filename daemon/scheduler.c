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
 * Two threads: the pass's own drives the gateway and claims (pump.c); a
 * recorder thread (recorder.c), on a connection of its own, writes outcomes
 * as they arrive, so that the gateway never waits for the ledger. See
 * docs/design.md, "The charge protocol". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <time.h>

#include "charges.h"
#include "cards.h"
#include "customers.h"
#include "db.h"
#include "log.h"
#include "pump.h"
#include "refunds.h"
#include "scheduler.h"
#include "subscriptions.h"

/* Open refunds and voids settled per pass. */
#define REFUNDS_PER_PASS   100
#define AUTH_BACKOFF_FIRST 5   /* seconds */
#define AUTH_BACKOFF_MAX   300 /* five minutes */

struct sched {
	const struct cfg *cfg;
	PGconn *db;
	struct gw_client *gw;
	struct pump *pump;
	struct gw_multi *checks; /* binding checks, beside the pump's charges */
	char resolve_cutoff[48]; /* database time at the start of sched_resolve */
	int backoff;             /* seconds: the gateway refused our key or mch_id */
	long long quiet_until;   /* monotonic seconds: no gateway call before */
	volatile sig_atomic_t stopping;
};

struct sched *sched_new(const struct cfg *cfg, PGconn *db, struct gw_client *gw, const char *owner)
{
	struct sched *s = calloc(1, sizeof(*s));

	if (s) {
		s->pump = pump_new(cfg, gw, owner);
		s->checks = gw_multi_new(gw, cfg->gateway.max_in_flight);
	}
	if (!s || !s->pump || !s->checks) {
		if (s && s->pump)
			pump_free(s->pump);
		gw_multi_free(s ? s->checks : NULL);
		free(s);
		return NULL;
	}
	s->cfg = cfg;
	s->db = db;
	s->gw = gw;
	return s;
}

void sched_free(struct sched *s)
{
	if (!s)
		return;
	gw_multi_free(s->checks);
	pump_free(s->pump);
	free(s);
}

void sched_set_db(struct sched *s, PGconn *db)
{
	s->db = db;
}

void sched_set_owner_lock(struct sched *s, struct owner_lock *lock)
{
	pump_set_owner_lock(s->pump, lock);
}

void sched_set_probing(struct sched *s, int on)
{
	pump_set_probing(s->pump, on);
}

int sched_restore_sent(struct sched *s, int64_t now, char *err, size_t errlen)
{
	if (db_set_now(s->db, now, err, errlen) < 0)
		return -1;
	return pump_restore_sent(s->pump, s->db, err, errlen);
}

struct failover_recent *sched_take_sent(struct sched *s)
{
	return pump_take_sent(s->pump);
}

void sched_give_sent(struct sched *s, struct failover_recent *r)
{
	pump_give_sent(s->pump, r);
}

void sched_stop(struct sched *s)
{
	s->stopping = 1;
}

/* ---- period boundaries and enrolment follow-up ---- */

static int boundaries(struct sched *s, int64_t now, char *err, size_t errlen)
{
	if (subscriptions_boundaries(s->db, now, err, errlen) < 0 ||
	    cards_due_final_checks(s->db, now, err, errlen) < 0)
		return -1;
	return 0;
}

/* A pass's binding checks: cc_isbinding answers are recorded as they come,
 * on the pass's thread and connection. */
struct checking {
	struct sched *s;
	int64_t now;
	struct sched_stats *st;
	int failed; /* a database error: err says it */
	char *err;
	size_t errlen;
};
struct check_job {
	struct checking *ck;
	char id[31];
};

static void check_done(void *udata, const struct gw_result *res)
{
	struct check_job *j = udata;
	struct checking *ck = j->ck;
	struct customers_binding b = {0};

	/* After an error the pass stops; the check is made again later. */
	if (!ck->failed && cards_record_binding(ck->s->db, j->id, res->outcome, ck->now, &b,
	                                        ck->err, ck->errlen) < 0)
		ck->failed = 1;
	if (!ck->failed)
		log_event("info", "binding_check", "customer", j->id, "was", b.was, "state",
		          b.state, "outcome", gw_outcome_name(res->outcome), (char *)NULL);
	if (ck->st)
		ck->st->bindings++;
	free(j);
}

/* Claims up to room due checks and sends them; how many, or -1. */
static int claim_checks(struct checking *ck, int room)
{
	char(*ids)[31] = calloc((size_t)room, sizeof(*ids));
	int n;

	if (!ids) {
		snprintf(ck->err, ck->errlen, "out of memory");
		return -1;
	}
	n = cards_claim_checks(ck->s->db, ck->now, room, ids, ck->err, ck->errlen);
	for (int i = 0; i < n; i++) {
		struct check_job *j = calloc(1, sizeof(*j));
		struct gw_request req = {.call = GW_ISBINDING};

		if (!j)
			abort(); /* claimed: its next check is pushed out, not lost */
		j->ck = ck;
		memcpy(j->id, ids[i], sizeof(j->id));
		req.customer_id = j->id;
		if (gw_multi_submit(ck->s->checks, &req, check_done, j, NULL) == GW_INVALID)
			free(j); /* refused before sending: checked again later */
	}
	free(ids);
	return n;
}

/* Every check due is made in this pass, max_in_flight at a time through the
 * asynchronous client (as the pump sends charges): a pending enrolment is
 * failed only by a not-bound answer, so none waits behind a small quota. */
static int check_bindings(struct sched *s, int64_t now, struct sched_stats *st, char *err,
                          size_t errlen)
{
	struct checking ck = {.s = s, .now = now, .st = st, .err = err, .errlen = errlen};
	int max = s->cfg->gateway.max_in_flight, more = 1;

	/* After an error nothing more is claimed, but what is in flight is
	 * finished here: its callbacks point at this call's ck. */
	for (;;) {
		int room = max - gw_multi_pending(s->checks), idle = room == max;

		if (more && !ck.failed && !s->stopping && room > 0 &&
		    (room >= max / 16 + 1 || idle)) {
			int n = claim_checks(&ck, room);

			ck.failed |= n < 0;
			more = n == room;
			continue;
		}
		if (idle)
			return ck.failed ? -1 : 0;
		if (gw_multi_run(s->checks, 100) < 0) {
			/* abandoned: gw_multi_run calls no callback after this */
			snprintf(err, errlen, "gateway client: internal error");
			return -1;
		}
	}
}

/* Refunds and voids left unknown (or pending by a process that died) are
 * settled with cc_query, one at a time: they are rare. */
static int resolve_refunds(struct sched *s, int64_t now, char *err, size_t errlen)
{
	char n_open[16], n_settled[16];
	int settled,
	    n = refunds_resolve_open(s->db, s->gw, now, REFUNDS_PER_PASS, &settled, err, errlen);

	if (n > 0) {
		snprintf(n_open, sizeof(n_open), "%d", n);
		snprintf(n_settled, sizeof(n_settled), "%d", settled);
		log_event("info", "refunds_resolved", "open", n_open, "settled", n_settled,
		          (char *)NULL);
	}
	return n < 0 ? -1 : 0;
}

/* ---- passes ---- */

int sched_resolve(struct sched *s, int64_t now, struct sched_stats *st, char *err, size_t errlen)
{
	struct pump_work w = {.now = now, .cutoff = s->resolve_cutoff};

	/* Each is queried once: an outcome still unknown becomes claimable
	 * again only after this cutoff, that is in a later pass. */
	if (charges_cutoff(s->db, s->resolve_cutoff, sizeof(s->resolve_cutoff), err, errlen) < 0)
		return -1;
	return pump_run(s->pump, s->db, &w, &s->stopping, st, err, errlen) < 0 ? -1 : 0;
}

static long long monotonic_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec;
}

/* After a pass that called the gateway: a refused key or mch_id would be
 * refused again, for every charge, and so would a wave of one unfamiliar
 * FAIL (wave.h), so calls wait (doubling up to five minutes) rather than
 * re-query every pass; any other pass ends the wait. */
static void auth_backoff(struct sched *s, const struct sched_stats *st)
{
	char secs[16];
	int wave = pump_wave_on(s->pump);

	if (!st->auth && !wave) {
		if (st->succeeded || st->declined || st->absent || st->unknown || st->bindings)
			s->backoff = 0;
		return;
	}
	s->backoff = !s->backoff                         ? AUTH_BACKOFF_FIRST
	             : s->backoff * 2 > AUTH_BACKOFF_MAX ? AUTH_BACKOFF_MAX
	                                                 : s->backoff * 2;
	s->quiet_until = monotonic_s() + s->backoff;
	snprintf(secs, sizeof(secs), "%d", s->backoff);
	log_event(wave ? "warn" : "error", "gateway_backoff", "reason",
	          gw_reason_name(wave ? GW_R_UNFAMILIAR : GW_R_AUTH), "seconds", secs,
	          (char *)NULL);
}

int sched_pass(struct sched *s, int64_t now, struct sched_stats *st, char *err, size_t errlen)
{
	struct sched_stats mine = {0};
	int n;

	if (!st)
		st = &mine;
	if (db_set_now(s->db, now, err, errlen) < 0 || boundaries(s, now, err, errlen) < 0)
		return -1;
	if (monotonic_s() < s->quiet_until)
		return 0;
	/* Unknowns first: their subscriptions get nothing new until resolved.
	 * Bindings before charging, so that a card bound now is charged in this
	 * pass, */
	if (sched_resolve(s, now, st, err, errlen) < 0 ||
	    resolve_refunds(s, now, err, errlen) < 0 || check_bindings(s, now, st, err, errlen) < 0)
		return -1;
	if (s->stopping)
		return 0;
	n = pump_run(s->pump, s->db, &(struct pump_work){.now = now}, &s->stopping, st, err,
	             errlen);
	if (n < 0)
		return -1;
	st->claimed += n;
	st->swept = !s->stopping;
	/* and after: a charge declined for a binding reason flagged its
	 * customer, whose binding is settled before the next attempt */
	if (!s->stopping && check_bindings(s, now, st, err, errlen) < 0)
		return -1;
	auth_backoff(s, st);
	return 0;
}

int sched_charge_now(struct sched *s, int64_t subscription_id, int64_t now, int end_trial,
                     char *mch_order_no, size_t len, char *err, size_t errlen)
{
	char state[16];
	int n;

	mch_order_no[0] = '\0';
	n = subscriptions_make_due(s->db, subscription_id, now, end_trial, err, errlen);
	if (n > 0)
		n = pump_claim(s->pump, s->db,
		               &(struct pump_work){.now = now, .only_sub = subscription_id}, 1, err,
		               errlen);
	if (n <= 0) {
		if (n == 0)
			subscriptions_why_not_due(s->db, subscription_id, err, errlen);
		return GW_INVALID;
	}
	/* From here the request may be on the wire: whatever goes wrong, the
	 * outcome is unknown and the next pass resolves it. */
	if (pump_run(s->pump, s->db, NULL, &s->stopping, NULL, err, errlen) < 0 ||
	    charges_last_attempt(s->db, subscription_id, mch_order_no, len, state, sizeof(state),
	                         err, errlen) < 0)
		return GW_UNKNOWN;
	return charges_state_outcome(state);
}
