/* recorder.h: the scheduler's recorder thread: writes the outcomes of
 * completed gateway requests in batches, on a database connection of its
 * own, so that the gateway never waits for the ledger. Only the lease owner
 * records; an outcome moves its charge (charges.h) and, for the current
 * period, its subscription by the billing rules (billing.h). */
#ifndef RECORDER_H
#define RECORDER_H

#include <stddef.h>
#include <stdint.h>

#include "billing.h"
#include "config.h"
#include "gateway.h"
#include "scheduler.h"

struct recorder;

/* One claimed charge sent to the gateway, then handed to the recorder. */
struct rec_job {
	struct recorder *rec;
	int64_t charge_id;
	int64_t amount;
	int64_t now; /* the billing clock when it was sent */
	int is_query;
	/* before sending (failover.h): 1 asks for the number, k > 1 for the
	 * attempt k - 1 past it; 0 once settled */
	int probe;
	struct rec_job *next; /* the pump's list of probed jobs to send */
	int wave;             /* its FAIL is a wave's (wave.h): not processed, nobody dunned */
	int unsent;           /* claimed, then kept back by a wave: never sent, so absent */
	char mch_order_no[31];
	char customer_id[31];
	char sub_id[24];
	struct gw_result res;
	/* filled when recorded */
	int recorded;
	enum billing_result result;
	const char *sub_state;
};

/* A growing list of jobs (the recorder's queue, the pump's held answers).
 * Adding never fails: out of memory stops the process, since an outcome
 * must not be dropped silently (docs/design.md, "Out of memory"). */
struct rec_jobs {
	struct rec_job **v;
	int n, cap;
};
void rec_jobs_add(struct rec_jobs *q, struct rec_job *j);
/* Frees the jobs and the list; the list is empty again. */
void rec_jobs_free(struct rec_jobs *q);

/* Starts the thread; it connects to cfg->database_url as owner on first
 * use. Borrows cfg. NULL when out of memory or threads. */
struct recorder *recorder_new(const struct cfg *cfg, const char *owner);
/* Records what is queued, then stops the thread and frees rec (not NULL). */
void recorder_free(struct recorder *rec);

/* Hands a completed job (j->res filled) to j->rec, which frees it. Safe
 * from any thread. */
void recorder_push(struct rec_job *j);

/* Outcomes handed over and not yet written: the queue and the batch being
 * written. */
int recorder_backlog(struct recorder *rec);
/* Waits until the backlog is below n, or for timeout_ms at most. */
void recorder_wait_below(struct recorder *rec, int n, int timeout_ms);

/* Waits until every job pushed is recorded; adds the counts to st (may be
 * NULL). -1 with err when a batch could not be written since the last
 * flush (its charges stay open until their lease ends). */
int recorder_flush(struct recorder *rec, struct sched_stats *st, char *err, size_t errlen);

#endif
