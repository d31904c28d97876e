/* cards.c: card replacement. A replacement's row is committed (pending,
 * with its token and follow-up) before cc_adduser is asked, as an
 * enrolment's is; the card in use moves to it only in the statement that
 * records it bound. */
#include <stdio.h>
#include <string.h>

#include "calendar.h"
#include "cards.h"
#include "db.h"

#define FOLLOW_UP_SECONDS 300
#define SEP               '~' /* never in a customer id: derived ids meet no customer's */

#define UPDATE_COLS                                                                                \
	"customer_id, binding_id, state, coalesce(pay_url, ''), "                                  \
	"extract(epoch FROM requested_at)::bigint, extract(epoch FROM expires_at)::bigint"

/* UPDATE_COLS, in order. */
static const struct db_col UPDATE_FIELDS[] = {
    DB_COL_S(struct cards_update, customer_id),  DB_COL_S(struct cards_update, binding_id),
    DB_COL_S(struct cards_update, state),        DB_COL_S(struct cards_update, pay_url),
    DB_COL_I(struct cards_update, requested_at), DB_COL_I(struct cards_update, expires_at),
};

int cards_pending(PGconn *c, const char *id, struct cards_update *out, char *err, size_t errlen)
{
	PGresult *r = db_get(c, err, errlen,
	                     "SELECT " UPDATE_COLS " FROM card_updates"
	                     " WHERE customer_id = $1 AND state = 'pending'",
	                     DB_S(id));
	int n;

	if (!r)
		return -1;
	n = PQntuples(r) > 0;
	if (n)
		db_fill(r, 0, UPDATE_FIELDS, DB_NCOLS(UPDATE_FIELDS), out);
	PQclear(r);
	return n;
}

/* The next binding id of customer id: id~N, N one more than any before
 * (from 2: the first card is bound under the id itself), the id cut short
 * when id~N would exceed the gateway's 30 characters (binding ids are
 * unique: a clash is refused, never shared). */
static int next_binding(PGconn *c, const char *id, char out[31], int *n, char *err, size_t errlen)
{
	PGresult *r = db_get(
	    c, err, errlen,
	    "SELECT coalesce(max(n), 1) + 1 FROM card_updates WHERE customer_id = $1", DB_S(id));
	char suffix[16];
	int keep;

	if (!r)
		return -1;
	*n = (int)db_i64(r, 0, 0);
	PQclear(r);
	snprintf(suffix, sizeof(suffix), "%c%d", SEP, *n);
	keep = 30 - (int)strlen(suffix);
	snprintf(out, 31, "%.*s%s", keep, id, suffix);
	return 0;
}

static int refuse_pending(const struct cards_update *u, char *err, size_t errlen)
{
	char until[64];

	cal_format(u->expires_at, until, sizeof(until));
	snprintf(err, errlen,
	         "customer %s already has a card update pending (%s, open until %s): "
	         "`billctl customer show %s` shows its link",
	         u->customer_id, u->binding_id, until, u->customer_id);
	return -1;
}

/* The pending row, written only for a bound customer with none pending
 * (the partial unique index settles a race). Its token into token. */
static int insert_pending(PGconn *c, const struct cards_update *u, int n, int64_t check,
                          char *token, size_t tlen, char *err, size_t errlen)
{
	PGresult *r = db_get(
	    c, err, errlen,
	    "INSERT INTO card_updates (binding_id, customer_id, n, enrol_token, requested_at,"
	    "                          expires_at, next_check_at)"
	    " SELECT $1, customer_id, $3, replace(gen_random_uuid()::text, '-', ''),"
	    "        to_timestamp($4), to_timestamp($5), to_timestamp($6)"
	    "   FROM customers WHERE customer_id = $2 AND state = 'bound'"
	    " RETURNING enrol_token",
	    DB_S(u->binding_id), DB_S(u->customer_id), DB_I(n), DB_I(u->requested_at),
	    DB_I(u->expires_at), DB_I(check));
	int done;

	if (!r) {
		if (strcmp(db_last_sqlstate(), "23505") == 0)
			snprintf(err, errlen,
			         "customer %s: not recorded: another card update was made at the "
			         "same time (`billctl customer show %s`), or binding id %s is "
			         "taken",
			         u->customer_id, u->customer_id, u->binding_id);
		return -1;
	}
	done = PQntuples(r) > 0;
	if (done)
		snprintf(token, tlen, "%s", db_str(r, 0, 0));
	else
		snprintf(err, errlen, "customer %s is no longer bound: nothing done",
		         u->customer_id);
	PQclear(r);
	return done ? 0 : -1;
}

int cards_request(PGconn *c, struct gw_client *gw, const struct cfg *cfg, const char *id,
                  int64_t now, int dry_run, struct cards_update *out, char *err, size_t errlen)
{
	struct customer cu;
	struct gw_request req = {.call = GW_ADDUSER};
	struct gw_result res;
	char ret_url[201], token[64];
	int n, rc;

	memset(out, 0, sizeof(*out));
	if (customers_get(c, id, &cu, err, errlen) < 0)
		return -1;
	if (strcmp(cu.state, customers_states[CUSTOMERS_BOUND]) != 0) {
		snprintf(err, errlen,
		         "customer %s has no card in use (%s): give it one with "
		         "`billctl customer enrol %s`",
		         id, cu.state, id);
		return -1;
	}
	rc = cards_pending(c, id, out, err, errlen);
	if (rc != 0)
		return rc < 0 ? -1 : refuse_pending(out, err, errlen);
	snprintf(out->customer_id, sizeof(out->customer_id), "%s", id);
	snprintf(out->state, sizeof(out->state), "pending");
	out->requested_at = now;
	out->expires_at = now + (int64_t)cfg->enrolment_expiry_hours * 3600;
	/* checked with a token's length before anything is written */
	if (next_binding(c, id, out->binding_id, &n, err, errlen) < 0 ||
	    customers_return_url(cfg, out->binding_id, "00000000000000000000000000000000", ret_url,
	                         sizeof(ret_url), err, errlen) < 0)
		return -1;
	if (dry_run)
		return 0;
	if (insert_pending(c, out, n, now + FOLLOW_UP_SECONDS, token, sizeof(token), err, errlen) <
	        0 ||
	    customers_return_url(cfg, out->binding_id, token, ret_url, sizeof(ret_url), err,
	                         errlen) < 0)
		return -1;
	req.customer_id = out->binding_id;
	req.return_url = ret_url;
	memset(&res, 0, sizeof(res));
	if (gw_call(gw, &req, &res) != GW_SUCCESS || res.pay_url[0] == '\0') {
		char why[512];

		/* No page was handed out: nobody can complete it. */
		snprintf(why, sizeof(why), "%s (%s)",
		         res.outcome == GW_FAIL ? res.ret_msg : res.detail,
		         gw_outcome_name(res.outcome));
		if (db_run(c, err, errlen,
		           "UPDATE card_updates SET state = 'failed', next_check_at = NULL"
		           " WHERE binding_id = $1 AND state = 'pending'",
		           DB_S(out->binding_id)) < 0)
			return -1;
		snprintf(err, errlen,
		         "cc_adduser for %s: %s; the card update is dropped and card %s stays in "
		         "use: run it again",
		         out->binding_id, why, cu.card_masked);
		return -1;
	}
	snprintf(out->pay_url, sizeof(out->pay_url), "%s", res.pay_url);
	return db_run(c, err, errlen, "UPDATE card_updates SET pay_url = $2 WHERE binding_id = $1",
	              DB_S(out->binding_id), DB_S(res.pay_url));
}

/* The switch: the update bound and the customer's card in use moved to it,
 * in one statement (its audit row and customer.bound event with it). $2:
 * the update's token (a return), or NULL (cc_isbinding: a pending update
 * only); $3..$5 the card (NULL: not told). */
static const char SQL_SWITCH[] =
    "WITH u AS (UPDATE card_updates SET state = 'bound', enrol_token = NULL,"
    "                                   next_check_at = NULL"
    "            WHERE binding_id = $1 AND (($2::text IS NULL AND state = 'pending')"
    "                  OR (state <> 'bound' AND enrol_token = $2::text))"
    "            RETURNING customer_id, binding_id)"
    " UPDATE customers cu SET binding_id = u.binding_id, state = 'bound',"
    "        card_masked = $3, card_type = nullif($4, ''), card_expiry = $5,"
    "        enrol_token = NULL, next_check_at = NULL, checks_done = 0"
    "   FROM u WHERE cu.customer_id = u.customer_id RETURNING 1";

static int is_update(const char *gwid)
{
	return strchr(gwid, SEP) != NULL;
}

/* CHANGED when changed rows, else UNCHANGED for a known update, UNKNOWN. */
static enum customers_outcome outcome_of(PGconn *c, int changed, const char *gwid, char *err,
                                         size_t errlen)
{
	if (changed > 0)
		return CUSTOMERS_CHANGED;
	if (changed == 0)
		changed = db_count(c, err, errlen,
		                   "SELECT 1 FROM card_updates WHERE binding_id = $1", DB_S(gwid));
	if (changed < 0)
		return CUSTOMERS_ERROR;
	if (changed)
		return CUSTOMERS_UNCHANGED;
	snprintf(err, errlen, "unknown customer '%.40s'", gwid);
	return CUSTOMERS_UNKNOWN;
}

enum customers_outcome cards_record_return(PGconn *c, const char *gwid, const char *token,
                                           int success, const char *card, const char *type,
                                           const char *expiry, char *err, size_t errlen)
{
	if (!is_update(gwid))
		return customers_record_return(c, gwid, token, success, card, type, expiry, err,
		                               errlen);
	/* A failure keeps the token: the customer may try again on that page. */
	if (!success)
		return outcome_of(c,
		                  db_count(c, err, errlen,
		                           "UPDATE card_updates SET state = 'failed'"
		                           " WHERE binding_id = $1 AND state = 'pending'"
		                           "   AND enrol_token = $2 RETURNING 1",
		                           DB_S(gwid), DB_S(token)),
		                  gwid, err, errlen);
	if (customers_valid_card(card, type, expiry, err, errlen) < 0)
		return CUSTOMERS_INVALID;
	return outcome_of(c,
	                  db_count(c, err, errlen, SQL_SWITCH, DB_S(gwid), DB_S(token), DB_S(card),
	                           DB_S(type), DB_S(expiry)),
	                  gwid, err, errlen);
}

int cards_record_binding(PGconn *c, const char *gwid, enum gw_outcome outcome, int64_t now,
                         struct customers_binding *out, char *err, size_t errlen)
{
	char id[31] = "";
	PGresult *r;
	int pending, n;

	memset(out, 0, sizeof(*out));
	out->outcome = outcome;
	pending = db_count(c, err, errlen,
	                   "SELECT 1 FROM card_updates WHERE binding_id = $1 AND state = 'pending'",
	                   DB_S(gwid));
	if (pending < 0)
		return -1;
	if (!pending) {
		/* Only the binding in use speaks for a customer: an older one's
		 * answer says nothing of the card charged now. */
		r = db_get(c, err, errlen,
		           "SELECT customer_id FROM customers"
		           " WHERE binding_id = $1 OR (customer_id = $1 AND binding_id IS NULL)",
		           DB_S(gwid));
		if (!r)
			return -1;
		if (PQntuples(r))
			snprintf(id, sizeof(id), "%s", db_str(r, 0, 0));
		PQclear(r);
		return id[0] ? customers_record_binding(c, id, outcome, now, out, err, errlen) : 0;
	}
	snprintf(out->was, sizeof(out->was), "pending");
	snprintf(out->state, sizeof(out->state), "pending");
	if (outcome == GW_SUCCESS)
		n = db_count(c, err, errlen, SQL_SWITCH, DB_S(gwid), DB_S(NULL), DB_S(NULL),
		             DB_S(NULL), DB_S(NULL));
	else if (outcome == GW_FAIL)
		n = db_count(c, err, errlen,
		             "UPDATE card_updates SET state = 'failed', next_check_at = NULL"
		             " WHERE binding_id = $1 AND state = 'pending'"
		             "   AND expires_at <= to_timestamp($2) RETURNING 1",
		             DB_S(gwid), DB_I(now));
	else
		return 0;
	if (n < 0)
		return -1;
	if (n > 0)
		snprintf(out->state, sizeof(out->state), "%s",
		         outcome == GW_SUCCESS ? "bound" : "failed");
	return 0;
}

int cards_claim_checks(PGconn *c, int64_t now, int limit, char (*ids)[31], char *err, size_t errlen)
{
	PGresult *r;
	int n = customers_claim_checks(c, now, limit, ids, err, errlen), i;

	if (n < 0 || n == limit)
		return n;
	r = db_get(c, err, errlen,
	           "UPDATE card_updates SET checks_done = checks_done + 1,"
	           "       next_check_at = to_timestamp($1) + make_interval(secs =>"
	           "                       least(300 * 2 ^ least(checks_done, 10), 21600))"
	           " WHERE id IN (SELECT id FROM card_updates"
	           "               WHERE next_check_at <= to_timestamp($1) AND state = 'pending'"
	           "               ORDER BY next_check_at LIMIT $2 FOR UPDATE SKIP LOCKED)"
	           " RETURNING binding_id",
	           DB_I(now), DB_I(limit - n));
	if (!r)
		return -1;
	for (i = 0; i < PQntuples(r) && n < limit; i++, n++)
		snprintf(ids[n], sizeof(ids[n]), "%s", db_str(r, i, 0));
	PQclear(r);
	return n;
}

int cards_due_final_checks(PGconn *c, int64_t now, char *err, size_t errlen)
{
	if (customers_due_final_checks(c, now, err, errlen) < 0)
		return -1;
	return db_run(c, err, errlen,
	              "UPDATE card_updates SET next_check_at = to_timestamp($1)"
	              " WHERE state = 'pending' AND expires_at <= to_timestamp($1)"
	              "   AND (next_check_at IS NULL OR next_check_at > to_timestamp($1))",
	              DB_I(now));
}
