/* plans.h: plan files (plans/<code>.yaml) loaded, validated and synced into
 * versioned rows of the plans table. billing.h applies them. */
#ifndef PLANS_H
#define PLANS_H

#include <stddef.h>
#include <stdint.h>
#include <libpq-fe.h>

#include "calendar.h"

#define PLAN_MAX_RETRY 16

enum plan_exhausted { PLAN_PAST_DUE, PLAN_CANCEL, PLAN_PAUSE };

struct plan {
	int64_t id;  /* row id; 0 for a plan loaded from a file */
	int version; /* 0 for a plan loaded from a file */
	char code[41];
	char name[128];
	int64_t amount; /* cents, CAD */
	enum cal_unit interval;
	int interval_count;
	int trial_days;
	int cycles; /* number of payments; 0 = until cancelled */
	int nretry;
	struct cal_duration retry[PLAN_MAX_RETRY]; /* delays after each failed attempt */
	enum plan_exhausted on_exhausted;
};

/* Loads and validates one plan file; its name must be <code>.yaml. Required
 * keys: code, name, amount, currency (CAD), interval, interval_count; optional:
 * trial_days (0), cycles (until cancelled), retry.schedule (none) and
 * retry.on_exhausted (past_due). On error returns -1 with one line such as
 * "plans/monthly.yaml:4: amount: must be a positive integer (cents), got '-5'". */
int plans_load_file(const char *path, struct plan *p, char *err, size_t errlen);

/* Loads every *.yaml of dir, sorted by code; a code defined by two files is
 * refused naming both. *out is malloc'd (caller free()s); 0 / -1. */
int plans_load_dir(const char *dir, struct plan **out, int *n, char *err, size_t errlen);

/* Stores the plans in one transaction: a plan whose content differs from its
 * latest version gets a new version row, an unchanged one nothing. *created:
 * the number of new rows. 0 / -1. */
int plans_sync(PGconn *c, const struct plan *p, int n, int *created, char *err, size_t errlen);

/* How a plan file stands against the latest row of its code. */
enum plan_change { PLAN_SAME, PLAN_NEW, PLAN_CHANGED };
struct plan_diff {
	enum plan_change change;
	int version;        /* the latest row's version; 0 for PLAN_NEW */
	int64_t old_amount; /* the latest row's amount (cents) */
};

/* Compares each of the n plans with the latest version of its code, writing
 * nothing: diff[i] is p[i]'s. 0 / -1. */
int plans_diff(PGconn *c, const struct plan *p, int n, struct plan_diff *diff, char *err,
               size_t errlen);

/* plans_load_dir then plans_sync: what `billctl plans sync` does (daemons
 * never write plans). *loaded: plans found in dir. 0 / -1. */
int plans_sync_dir(PGconn *c, const char *dir, int *loaded, int *created, char *err, size_t errlen);

/* The plan row with this id; -1 "unknown plan id 7". */
int plans_get(PGconn *c, int64_t id, struct plan *p, char *err, size_t errlen);
/* The latest version of code; -1 "unknown plan 'x'". */
int plans_get_current(PGconn *c, const char *code, struct plan *p, char *err, size_t errlen);
/* The latest version of every plan, sorted by code; *out is malloc'd (caller
 * free()s, NULL when there is none). 0 / -1. */
int plans_list(PGconn *c, struct plan **out, int *n, char *err, size_t errlen);

/* The retry schedule as "1d,3d,7d" ("" when there is none). */
void plans_retry_format(const struct plan *p, char *buf, size_t len);

/* "past_due" "cancel" "pause" into *e; 0 / -1. */
int plans_exhausted_parse(const char *s, enum plan_exhausted *e);
/* "past_due" "cancel" "pause". */
const char *plans_exhausted_name(enum plan_exhausted e);

#endif
