/* customers.c: the customers ledger: enrolment through cc_adduser, the
 * gateway's verdict from the signed return, states and card expiry.
 *
 * The database row is written before the gateway is asked, so that a
 * customer whose hosted page is out there is always known to us (pending,
 * with a follow-up check scheduled). */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "customers.h"
#include "db.h"

const char *const customers_states[CUSTOMERS_NSTATES] = {[CUSTOMERS_PENDING] = "pending",
                                                         [CUSTOMERS_BOUND] = "bound",
                                                         [CUSTOMERS_FAILED] = "failed",
                                                         [CUSTOMERS_UNBOUND] = "unbound"};

#define FOLLOW_UP_SECONDS 300

#define COLS                                                                                       \
	"customer_id, coalesce(email, ''), coalesce(name, ''), state, coalesce(card_masked, ''), " \
	"coalesce(card_type, ''), coalesce(card_expiry, ''), "                                     \
	"extract(epoch FROM enrol_expires_at)::bigint, "                                           \
	"extract(epoch FROM next_check_at)::bigint, extract(epoch FROM created_at)::bigint, "      \
	"coalesce(binding_id, customer_id)"

/* A card is valid through the last day of its MMYY month: it expires at the
 * start of the next month (UTC). NULL for a malformed month. */
#define EXPIRY_END                                                                                 \
	"(CASE WHEN substr(card_expiry, 1, 2) BETWEEN '01' AND '12' THEN "                         \
	"make_timestamptz(2000 + substr(card_expiry, 3, 2)::int, substr(card_expiry, 1, 2)::int, " \
	"1, 0, 0, 0, 'UTC') + interval '1 month' END)"

/* $1: days, $2: now (unix seconds). */
#define EXPIRING                                                                                   \
	"(state = 'bound' AND " EXPIRY_END " <= to_timestamp($2) + make_interval(days => "         \
	"$1::int))"

/* EXPIRING's parameters; a window of a century covers every card and keeps
 * the timestamp arithmetic in range. */
#define WINDOW_PARAMS(days, now) DB_I((days) > 36500 ? 36500 : (days)), DB_I(now)

static int valid_id(const char *id, char *err, size_t errlen)
{
	size_t n = strlen(id);

	if (n >= 1 && n <= 30 &&
	    strspn(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	               "0123456789_.-") == n)
		return 0;
	snprintf(err, errlen, "bad customer id '%.40s': 1 to 30 of A-Z a-z 0-9 _ . -", id);
	return -1;
}

static void copy(char *dst, size_t len, const char *src)
{
	snprintf(dst, len, "%s", src);
}

/* COLS, in order. */
static const struct db_col CUSTOMER_COLS[] = {
    DB_COL_S(struct customer, id),
    DB_COL_S(struct customer, email),
    DB_COL_S(struct customer, name),
    DB_COL_S(struct customer, state),
    DB_COL_S(struct customer, card_masked),
    DB_COL_S(struct customer, card_type),
    DB_COL_S(struct customer, card_expiry),
    DB_COL_I(struct customer, enrol_expires_at),
    DB_COL_I(struct customer, next_check_at),
    DB_COL_I(struct customer, created_at),
    DB_COL_S(struct customer, binding_id),
};

int customers_get(PGconn *c, const char *id, struct customer *out, char *err, size_t errlen)
{
	PGresult *r =
	    db_one(db_get(c, err, errlen, "SELECT " COLS " FROM customers WHERE customer_id = $1",
	                  DB_S(id)),
	           err, errlen, "unknown customer '%.40s'", id);

	if (!r)
		return -1;
	db_fill(r, 0, CUSTOMER_COLS, DB_NCOLS(CUSTOMER_COLS), out);
	PQclear(r);
	return 0;
}

/* Our own pair in the returnUrl: the enrolment's token (not signed by the
 * gateway, which appends its signed fields). */
#define TOKEN_KEY "enrolment="
#define TOKEN_LEN 32 /* hex digits */

int customers_return_url(const struct cfg *cfg, const char *id, const char *token, char *out,
                         size_t len, char *err, size_t errlen)
{
	const char *sep = strchr(cfg->return_url, '?') ? "&" : "?";
	int n = snprintf(out, len, "%s%scustomerId=%s&" TOKEN_KEY "%s", cfg->return_url, sep, id,
	                 token);

	if (cfg->return_url[0] == '\0') {
		snprintf(err, errlen, "enrolment.return_url is not set");
		return -1;
	}
	if (n < 0 || (size_t)n >= len) {
		snprintf(err, errlen,
		         "enrolment.return_url with customerId=%s is longer than the gateway's "
		         "200 characters",
		         id);
		return -1;
	}
	return 0;
}

/* Makes id a pending enrolment with a new token (into token): 1 when done,
 * 0 when the customer is bound, -1 on error. Not INSERT ... ON CONFLICT:
 * its BEFORE INSERT trigger would audit an insert that did not happen. An
 * enrolment binds under the customer's own id, whatever card it had. */
static int make_pending(PGconn *c, const char *id, const char *email, const char *name,
                        int64_t expires, int64_t check, char token[TOKEN_LEN + 1], char *err,
                        size_t errlen)
{
#define NEW_TOKEN "replace(gen_random_uuid()::text, '-', '')"
	static const char *const sql[2] = {
	    "UPDATE customers SET email = coalesce(nullif($2, ''), email), "
	    "name = coalesce(nullif($3, ''), name), state = 'pending', "
	    "enrol_expires_at = to_timestamp($4), next_check_at = to_timestamp($5), "
	    "checks_done = 0, binding_id = NULL, enrol_token = " NEW_TOKEN
	    " WHERE customer_id = $1 "
	    "AND state <> 'bound' RETURNING enrol_token",
	    "INSERT INTO customers (customer_id, email, name, state, enrol_expires_at, "
	    "next_check_at, enrol_token) SELECT $1::text, nullif($2, ''), nullif($3, ''), "
	    "'pending', to_timestamp($4), to_timestamp($5), " NEW_TOKEN
	    " WHERE NOT EXISTS (SELECT 1 FROM customers WHERE customer_id = $1::text)"
	    " RETURNING enrol_token"};
#undef NEW_TOKEN
	int tries, i;

	/* A second try when a concurrent enrolment inserted the same id. */
	for (tries = 0; tries < 2; tries++) {
		for (i = 0; i < 2; i++) {
			PGresult *r = db_get(c, err, errlen, sql[i], DB_S(id), DB_S(email),
			                     DB_S(name), DB_I(expires), DB_I(check));
			int done;

			if (!r)
				break;
			done = PQntuples(r) > 0;
			if (done)
				snprintf(token, TOKEN_LEN + 1, "%s", db_str(r, 0, 0));
			PQclear(r);
			if (done)
				return 1;
		}
		if (i == 2)
			return 0;
		if (strcmp(db_last_sqlstate(), "23505") != 0)
			return -1;
	}
	return -1;
}

int customers_enrol(PGconn *c, struct gw_client *gw, const struct cfg *cfg, const char *id,
                    const char *email, const char *name, int64_t now, char *pay_url, size_t url_len,
                    char *err, size_t errlen)
{
	char ret_url[201], token[TOKEN_LEN + 1];
	struct gw_request req = {.call = GW_ADDUSER, .customer_id = id, .return_url = ret_url};
	struct gw_result res;
	struct customer cur;
	int rc;

	/* checked with a token's length before anything is written */
	memset(token, '0', TOKEN_LEN);
	token[TOKEN_LEN] = '\0';
	if (valid_id(id, err, errlen) < 0 ||
	    customers_return_url(cfg, id, token, ret_url, sizeof(ret_url), err, errlen) < 0)
		return -1;
	email = email ? email : "";
	name = name ? name : "";
	if (strlen(email) >= sizeof(cur.email) || strlen(name) >= sizeof(cur.name)) {
		snprintf(err, errlen, "customer %s: email and name are limited to %zu characters",
		         id, sizeof(cur.email) - 1);
		return -1;
	}
	rc = make_pending(c, id, email, name, now + (int64_t)cfg->enrolment_expiry_hours * 3600,
	                  now + FOLLOW_UP_SECONDS, token, err, errlen);
	if (rc < 0 || (rc > 0 && customers_return_url(cfg, id, token, ret_url, sizeof(ret_url), err,
	                                              errlen) < 0))
		return -1;
	if (rc == 0) {
		if (customers_get(c, id, &cur, err, errlen) == 0)
			snprintf(err, errlen,
			         "customer %s is already bound to card %s; for another card: "
			         "billctl customer update-card %s",
			         id, cur.card_masked, id);
		return -1;
	}
	memset(&res, 0, sizeof(res));
	if (gw_call(gw, &req, &res) != GW_SUCCESS || res.pay_url[0] == '\0') {
		snprintf(err, errlen, "cc_adduser for %s: %s (%s); the customer stays pending", id,
		         res.outcome == GW_FAIL ? res.ret_msg : res.detail,
		         gw_outcome_name(res.outcome));
		return -1;
	}
	snprintf(pay_url, url_len, "%s", res.pay_url);
	return 0;
}

int customers_list(PGconn *c, int expiring_days, int64_t now, struct customer **out, int *n,
                   char *err, size_t errlen)
{
	*out = db_rows_of(db_get(c, err, errlen,
	                         "SELECT " COLS " FROM customers WHERE $1::int < 0 OR " EXPIRING
	                         " ORDER BY customer_id",
	                         WINDOW_PARAMS(expiring_days, now)),
	                  sizeof(**out), n, CUSTOMER_COLS, DB_NCOLS(CUSTOMER_COLS), err, errlen);
	return *out ? 0 : -1;
}

int customers_valid_card(const char *card, const char *type, const char *expiry, char *err,
                         size_t errlen)
{
	size_t n = strlen(card), masked = 0, i;

	for (i = 0; i < n; i++) {
		if (card[i] == 'X' || card[i] == 'x' || card[i] == '*')
			masked++;
		else if (!isdigit((unsigned char)card[i]))
			break;
	}
	if (i < n || n < 12 || n > 19 || masked < 4) {
		snprintf(err, errlen, "card number is not a masked card number");
		return -1;
	}
	for (i = 0; type[i]; i++)
		if (!isalnum((unsigned char)type[i]) || i >= 7) {
			snprintf(err, errlen, "bad card type '%.8s'", type);
			return -1;
		}
	if (strlen(expiry) != 4 || strspn(expiry, "0123456789") != 4 ||
	    strncmp(expiry, "01", 2) < 0 || strncmp(expiry, "12", 2) > 0) {
		snprintf(err, errlen, "bad card expiry '%.8s': expected MMYY", expiry);
		return -1;
	}
	return 0;
}

/* Runs an UPDATE ... RETURNING on one customer: CHANGED when it matched a
 * row, else UNCHANGED or UNKNOWN depending on whether the customer exists. */
static enum customers_outcome update_one(PGconn *c, const char *sql, const struct db_param *p,
                                         int np, char *err, size_t errlen)
{
	int changed = db_count_(c, err, errlen, sql, p, np, 1);

	if (changed > 0)
		return CUSTOMERS_CHANGED;
	if (changed == 0)
		changed = db_count(c, err, errlen, "SELECT 1 FROM customers WHERE customer_id = $1",
		                   p[0]);
	if (changed < 0)
		return CUSTOMERS_ERROR;
	if (changed)
		return CUSTOMERS_UNCHANGED;
	snprintf(err, errlen, "unknown customer '%.40s'", p[0].s);
	return CUSTOMERS_UNKNOWN;
}

void customers_return_token(const char *query, char *token, size_t tlen, char *rest, size_t rlen)
{
	size_t at = 0;

	token[0] = rest[0] = '\0';
	while (*query) {
		size_t k = strcspn(query, "&?");

		if (k > strlen(TOKEN_KEY) && strncmp(query, TOKEN_KEY, strlen(TOKEN_KEY)) == 0)
			snprintf(token, tlen, "%.*s", (int)(k - strlen(TOKEN_KEY)),
			         query + strlen(TOKEN_KEY));
		else if (at + k + 2 <= rlen) {
			if (at)
				rest[at++] = '&';
			memcpy(rest + at, query, k);
			rest[at += k] = '\0';
		}
		query += k + (query[k] != '\0');
	}
}

enum customers_outcome customers_record_return(PGconn *c, const char *id, const char *token,
                                               int success, const char *card, const char *type,
                                               const char *expiry, char *err, size_t errlen)
{
	/* A failure leaves the token: the customer may try again on the same
	 * page. */
	if (!success)
		return update_one(c,
		                  "UPDATE customers SET state = 'failed' "
		                  "WHERE customer_id = $1 AND state = 'pending' "
		                  "AND enrol_token = $2 RETURNING 1",
		                  DB_PARAMS(DB_S(id), DB_S(token)), err, errlen);
	if (customers_valid_card(card, type, expiry, err, errlen) < 0)
		return CUSTOMERS_INVALID;
	/* Only the enrolment's own return binds, once: it spends the token, so
	 * a replay (or an older enrolment's return) writes nothing. */
	return update_one(c,
	                  "UPDATE customers SET state = 'bound', card_masked = $2, "
	                  "card_type = nullif($3, ''), card_expiry = $4, enrol_token = NULL, "
	                  "binding_id = NULL "
	                  "WHERE customer_id = $1 AND state <> 'bound' AND enrol_token = $5 "
	                  "RETURNING 1",
	                  DB_PARAMS(DB_S(id), DB_S(card), DB_S(type), DB_S(expiry), DB_S(token)),
	                  err, errlen);
}

int customers_set_state(PGconn *c, const char *id, const char *state, char *err, size_t errlen)
{
	if (db_name_index(customers_states, CUSTOMERS_NSTATES, state) < 0) {
		snprintf(err, errlen,
		         "bad customer state '%.20s': pending, bound, failed or unbound", state);
		return -1;
	}
	return update_one(c, "UPDATE customers SET state = $2 WHERE customer_id = $1 RETURNING 1",
	                  DB_PARAMS(DB_S(id), DB_S(state)), err, errlen) == CUSTOMERS_CHANGED
	           ? 0
	           : -1;
}

int customers_count(PGconn *c, int expiring_days, int64_t now, struct customers_counts *out,
                    char *err, size_t errlen)
{
	PGresult *r;
	int i, j;

	r = db_get(c, err, errlen,
	           "SELECT state, count(*), count(*) FILTER (WHERE " EXPIRING ") "
	           "FROM customers GROUP BY state",
	           WINDOW_PARAMS(expiring_days, now));
	if (!r)
		return -1;
	memset(out, 0, sizeof(*out));
	for (i = 0; i < PQntuples(r); i++) {
		j = db_name_index(customers_states, CUSTOMERS_NSTATES, db_str(r, i, 0));
		if (j >= 0)
			out->state[j] = (long)db_i64(r, i, 1);
		out->expiring += (long)db_i64(r, i, 2);
	}
	PQclear(r);
	return 0;
}

/* ---- the binding rule and its follow-up ---- */

static const char SQL_BOUND[] =
    "UPDATE customers SET state = 'bound', next_check_at = NULL, checks_done = 0"
    " WHERE customer_id = $1 AND (state = 'pending'"
    "       OR (state = 'bound' AND (next_check_at IS NOT NULL OR checks_done <> 0)))"
    " RETURNING state";

/* Not bound: a bound customer is unbound; a pending enrolment fails only
 * past its expiry (the customer may still be on the card page before). */
static const char SQL_NOT_BOUND[] =
    "UPDATE customers SET state = CASE state WHEN 'bound' THEN 'unbound' ELSE 'failed' END,"
    "       next_check_at = NULL"
    " WHERE customer_id = $1 AND (state = 'bound'"
    "       OR (state = 'pending' AND enrol_expires_at <= to_timestamp($2)))"
    " RETURNING state";

int customers_record_binding(PGconn *c, const char *id, enum gw_outcome outcome, int64_t now,
                             struct customers_binding *out, char *err, size_t errlen)
{
	struct customer cu;
	PGresult *r;

	if (customers_get(c, id, &cu, err, errlen) < 0)
		return -1;
	copy(out->was, sizeof(out->was), cu.state);
	copy(out->state, sizeof(out->state), cu.state);
	out->outcome = outcome;
	if (outcome == GW_SUCCESS)
		r = db_get(c, err, errlen, SQL_BOUND, DB_S(id));
	else if (outcome == GW_FAIL)
		r = db_get(c, err, errlen, SQL_NOT_BOUND, DB_S(id), DB_I(now));
	else
		return 0;
	if (!r)
		return -1;
	if (PQntuples(r))
		copy(out->state, sizeof(out->state), db_str(r, 0, 0));
	PQclear(r);
	return 0;
}

int customers_check_binding(PGconn *c, struct gw_client *gw, const char *id, int64_t now,
                            struct customers_binding *out, char *err, size_t errlen)
{
	struct customer cu;
	struct gw_request req = {.call = GW_ISBINDING};
	struct gw_result res;

	memset(out, 0, sizeof(*out));
	if (customers_get(c, id, &cu, err, errlen) < 0)
		return -1;
	req.customer_id = cu.binding_id;
	gw_call(gw, &req, &res);
	copy(out->detail, sizeof(out->detail), res.detail);
	return customers_record_binding(c, id, res.outcome, now, out, err, errlen);
}

int customers_due_final_checks(PGconn *c, int64_t now, char *err, size_t errlen)
{

	return db_run(c, err, errlen,
	              "UPDATE customers SET next_check_at = to_timestamp($1)"
	              " WHERE state = 'pending' AND enrol_expires_at <= to_timestamp($1)"
	              "   AND (next_check_at IS NULL OR next_check_at > to_timestamp($1))",
	              DB_I(now));
}

static const char SQL_CLAIM_CHECKS[] =
    "UPDATE customers SET checks_done = checks_done + 1,"
    "       next_check_at = to_timestamp($1)"
    "                     + make_interval(secs => least(300 * 2 ^ least(checks_done, 10), 21600))"
    " WHERE customer_id IN (SELECT customer_id FROM customers"
    "                        WHERE next_check_at <= to_timestamp($1)"
    "                          AND state IN ('pending', 'bound')"
    "                        ORDER BY next_check_at LIMIT $2 FOR UPDATE SKIP LOCKED)"
    " RETURNING coalesce(binding_id, customer_id)";

int customers_claim_checks(PGconn *c, int64_t now, int limit, char (*ids)[31], char *err,
                           size_t errlen)
{
	PGresult *r;
	int n;

	r = db_get(c, err, errlen, SQL_CLAIM_CHECKS, DB_I(now), DB_I(limit));
	if (!r)
		return -1;
	n = PQntuples(r) < limit ? PQntuples(r) : limit;
	for (int i = 0; i < n; i++)
		copy(ids[i], sizeof(ids[i]), db_str(r, i, 0));
	PQclear(r);
	return n;
}

int customers_flag_recheck(PGconn *c, const char *ids, int64_t now, char *err, size_t errlen)
{

	return db_run(c, err, errlen,
	              "UPDATE customers SET next_check_at = to_timestamp($2)"
	              " WHERE (customer_id = ANY($1::text[]) OR binding_id = ANY($1::text[]))"
	              "   AND state = 'bound'",
	              DB_S(ids), DB_I(now));
}
