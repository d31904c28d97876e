/* plans_store.c: plans kept in the database as versioned rows: a row is
 * never changed, so a subscription keeps the terms it was sold; a plan file
 * whose content (checksum) differs from its latest row makes a new version. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>

#include "db.h"
#include "plans.h"

/* SHA-256 (hex) of the plan's terms, one per line (names hold no control
 * characters): formatting and comments in the file make no new version. */
static void checksum(const struct plan *p, const char *retry, char out[65])
{
	char text[512];
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	int len =
	    snprintf(text, sizeof(text), "%s\n%s\n%lld\nCAD\n%s\n%d\n%d\n%d\n%s\n%s\n", p->code,
	             p->name, (long long)p->amount, cal_unit_name(p->interval), p->interval_count,
	             p->trial_days, p->cycles, retry, plans_exhausted_name(p->on_exhausted));

	EVP_Digest(text, (size_t)len, md, &mdlen, EVP_sha256(), NULL);
	for (unsigned int i = 0; i < mdlen && i < 32; i++)
		sprintf(out + 2 * i, "%02x", md[i]);
}

/* The latest row of p's code against p's terms (no write): d->version 0
 * when there is none. sum: p's checksum. */
static int compare_latest(PGconn *c, const struct plan *p, const char *sum, struct plan_diff *d,
                          char *err, size_t errlen)
{
	PGresult *r = db_get(c, err, errlen,
	                     "SELECT version, checksum, amount_cents FROM plans WHERE code = $1 "
	                     "ORDER BY version DESC LIMIT 1",
	                     DB_S(p->code));

	if (!r)
		return -1;
	memset(d, 0, sizeof(*d));
	d->change = PLAN_NEW;
	if (PQntuples(r)) {
		d->version = (int)db_i64(r, 0, 0);
		d->change = strcmp(db_str(r, 0, 1), sum) == 0 ? PLAN_SAME : PLAN_CHANGED;
		d->old_amount = db_i64(r, 0, 2);
	}
	PQclear(r);
	return 0;
}

int plans_diff(PGconn *c, const struct plan *p, int n, struct plan_diff *diff, char *err,
               size_t errlen)
{
	char sum[65], retry[PLAN_MAX_RETRY * 8];

	for (int i = 0; i < n; i++) {
		plans_retry_format(&p[i], retry, sizeof(retry));
		checksum(&p[i], retry, sum);
		if (compare_latest(c, &p[i], sum, &diff[i], err, errlen) < 0)
			return -1;
	}
	return 0;
}

/* Inserts p as a new version unless its latest version has the same terms. */
static int sync_one(PGconn *c, const struct plan *p, int *created, char *err, size_t errlen)
{
	char sum[65], retry[PLAN_MAX_RETRY * 8];
	struct plan_diff d;

	plans_retry_format(p, retry, sizeof(retry));
	checksum(p, retry, sum);
	if (compare_latest(c, p, sum, &d, err, errlen) < 0)
		return -1;
	if (d.change == PLAN_SAME)
		return 0;
	if (db_run(c, err, errlen,
	           "INSERT INTO plans (code, version, name, amount_cents, currency, interval,"
	           " interval_count, trial_days, cycles, retry_schedule, on_exhausted, checksum)"
	           " VALUES ($1, $2, $3, $4, 'CAD', $5, $6, $7, $8, string_to_array($9, ','), $10,"
	           " $11)",
	           DB_S(p->code), DB_I(d.version + 1), DB_S(p->name), DB_I(p->amount),
	           DB_S(cal_unit_name(p->interval)), DB_I(p->interval_count), DB_I(p->trial_days),
	           DB_N(p->cycles), DB_S(retry), DB_S(plans_exhausted_name(p->on_exhausted)),
	           DB_S(sum)) < 0)
		return -1;
	(*created)++;
	return 0;
}

int plans_sync(PGconn *c, const struct plan *p, int n, int *created, char *err, size_t errlen)
{
	char e[512];

	*created = 0;
	if (db_begin(c, err, errlen) < 0)
		return -1;
	/* Serialises concurrent syncs (several admins at once), which would
	 * otherwise race for the same next version number. */
	if (db_exec(c, "SELECT pg_advisory_xact_lock(7283640012)", 0, NULL, err, errlen) < 0)
		goto fail;
	for (int i = 0; i < n; i++) {
		if (sync_one(c, &p[i], created, e, sizeof(e)) < 0) {
			snprintf(err, errlen, "plan '%s': %s", p[i].code, e);
			goto fail;
		}
	}
	if (db_commit(c, err, errlen) == 0)
		return 0;
fail:
	db_rollback(c);
	*created = 0;
	return -1;
}

int plans_sync_dir(PGconn *c, const char *dir, int *loaded, int *created, char *err, size_t errlen)
{
	struct plan *p;
	int rc;

	*loaded = *created = 0;
	if (plans_load_dir(dir, &p, loaded, err, errlen) < 0)
		return -1;
	rc = plans_sync(c, p, *loaded, created, err, errlen);
	free(p);
	return rc;
}

#define PLAN_COLUMNS                                                                               \
	"SELECT id, version, code, name, amount_cents, interval, interval_count, trial_days,"      \
	" coalesce(cycles, 0), array_to_string(retry_schedule, ','), on_exhausted FROM plans "

/* Columns of PLAN_COLUMNS, in order. */
enum {
	PC_ID,
	PC_VERSION,
	PC_CODE,
	PC_NAME,
	PC_AMOUNT,
	PC_INTERVAL,
	PC_INTERVAL_COUNT,
	PC_TRIAL_DAYS,
	PC_CYCLES,
	PC_RETRY,
	PC_ON_EXHAUSTED,
};

static int row_to_plan(const PGresult *r, int row, struct plan *p, char *err, size_t errlen)
{
	char retry[256], *tok, *save = NULL;

	memset(p, 0, sizeof(*p));
	p->id = db_i64(r, row, PC_ID);
	p->version = (int)db_i64(r, row, PC_VERSION);
	snprintf(p->code, sizeof(p->code), "%s", db_str(r, row, PC_CODE));
	snprintf(p->name, sizeof(p->name), "%s", db_str(r, row, PC_NAME));
	p->amount = db_i64(r, row, PC_AMOUNT);
	p->interval_count = (int)db_i64(r, row, PC_INTERVAL_COUNT);
	p->trial_days = (int)db_i64(r, row, PC_TRIAL_DAYS);
	p->cycles = (int)db_i64(r, row, PC_CYCLES);
	snprintf(retry, sizeof(retry), "%s", db_str(r, row, PC_RETRY));
	for (tok = strtok_r(retry, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
		if (p->nretry == PLAN_MAX_RETRY ||
		    cal_parse_duration(tok, &p->retry[p->nretry++]) < 0)
			goto bad;
	if (cal_unit_parse(db_str(r, row, PC_INTERVAL), &p->interval) < 0 ||
	    plans_exhausted_parse(db_str(r, row, PC_ON_EXHAUSTED), &p->on_exhausted) < 0)
		goto bad;
	return 0;
bad:
	snprintf(err, errlen, "plan id %lld: unreadable row in the plans table", (long long)p->id);
	return -1;
}

/* Runs a PLAN_COLUMNS query; *out malloc'd (NULL when no rows). */
static int query_plans(PGconn *c, const char *sql, const struct db_param *param, struct plan **out,
                       int *n, char *err, size_t errlen)
{
	PGresult *r = db_get_(c, err, errlen, sql, param, param ? 1 : 0);
	int rows, rc = 0;

	*out = NULL;
	*n = 0;
	if (!r)
		return -1;
	rows = PQntuples(r);
	if (rows && !(*out = calloc((size_t)rows, sizeof(**out)))) {
		snprintf(err, errlen, "plans: out of memory");
		rc = -1;
	}
	for (int i = 0; rc == 0 && i < rows; i++)
		rc = row_to_plan(r, i, &(*out)[i], err, errlen);
	PQclear(r);
	if (rc < 0) {
		free(*out);
		*out = NULL;
		return -1;
	}
	*n = rows;
	return 0;
}

/* The single plan a query selects, or -1 with unknown as the error. */
static int query_one(PGconn *c, const char *sql, const struct db_param *param, struct plan *p,
                     const char *unknown, char *err, size_t errlen)
{
	struct plan *rows;
	int n;

	if (query_plans(c, sql, param, &rows, &n, err, errlen) < 0)
		return -1;
	if (n == 0) {
		snprintf(err, errlen, "%s", unknown);
		return -1;
	}
	*p = rows[0];
	free(rows);
	return 0;
}

int plans_get(PGconn *c, int64_t id, struct plan *p, char *err, size_t errlen)
{
	char unknown[64];

	snprintf(unknown, sizeof(unknown), "unknown plan id %lld", (long long)id);
	return query_one(c, PLAN_COLUMNS "WHERE id = $1", &DB_I(id), p, unknown, err, errlen);
}

int plans_get_current(PGconn *c, const char *code, struct plan *p, char *err, size_t errlen)
{
	char unknown[128];

	snprintf(unknown, sizeof(unknown), "unknown plan '%.60s'", code);
	return query_one(c, PLAN_COLUMNS "WHERE code = $1 ORDER BY version DESC LIMIT 1",
	                 &DB_S(code), p, unknown, err, errlen);
}

int plans_list(PGconn *c, struct plan **out, int *n, char *err, size_t errlen)
{
	return query_plans(c,
	                   PLAN_COLUMNS
	                   "p WHERE NOT EXISTS (SELECT 1 FROM plans w"
	                   " WHERE w.code = p.code AND w.version > p.version) ORDER BY code",
	                   NULL, out, n, err, errlen);
}
