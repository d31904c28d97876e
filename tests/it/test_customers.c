/* test_customers.c: the customers ledger against a real database and the
 * fake gateway: enrolment (pending, timers, returnUrl, bound customers,
 * gateway down), the gateway's verdict (idempotent, never unbinding, never
 * storing a full card number), states, and cards expiring. */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "customers.h"
#include "db.h"
#include "gateway.h"
#include "support.h"

#define T_NOW 1907712000 /* 2030-06-15T00:00:00Z */

static struct ts_fakegw fake;
static PGconn *db;
static struct cfg cfg;
static struct gw_client *gw;

static int setup(void **state)
{
	char err[256];

	(void)state;
	ts_fakegw_start(&fake, NULL);
	db = ts_db_connect(ts_db_new("customers"));
	ts_cfg(&cfg, "", &fake);
	gw = gw_client_new(&cfg.gateway, err, sizeof(err));
	return gw ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	gw_client_free(gw);
	PQfinish(db);
	ts_fakegw_stop(&fake);
	return 0;
}

static long count(const char *q, const char *param)
{
	const char *p[1] = {param};
	char err[256];
	PGresult *r = db_query(db, q, 1, p, err, sizeof(err));
	long n;

	if (!r)
		fail_msg("%s: %s", q, err);
	n = atol(db_str(r, 0, 0));
	PQclear(r);
	return n;
}

static long audit_rows(const char *id)
{
	return count("SELECT count(*) FROM audit_log WHERE entity = 'customers' AND entity_id = $1",
	             id);
}

static void test_get_unknown(void **state)
{
	struct customer c;
	char err[256];

	(void)state;
	assert_int_equal(customers_get(db, "nobody", &c, err, sizeof(err)), -1);
	assert_string_equal(err, "unknown customer 'nobody'");
}

static void test_enrol_refuses_bad_input_before_anything(void **state)
{
	char err[256], url[1024];
	struct cfg c = cfg;

	(void)state;
	assert_int_equal(customers_enrol(db, gw, &cfg, "bad id!", NULL, NULL, T_NOW, url,
	                                 sizeof(url), err, sizeof(err)),
	                 -1);
	assert_string_equal(err, "bad customer id 'bad id!': 1 to 30 of A-Z a-z 0-9 _ . -");
	assert_int_equal(customers_enrol(db, gw, &cfg, "a234567890123456789012345678901", NULL,
	                                 NULL, T_NOW, url, sizeof(url), err, sizeof(err)),
	                 -1); /* 31 characters */
	memset(c.return_url, 'x', 190);
	memcpy(c.return_url, "https://", 8);
	c.return_url[190] = '\0';
	assert_int_equal(customers_enrol(db, gw, &c, "long_url", NULL, NULL, T_NOW, url,
	                                 sizeof(url), err, sizeof(err)),
	                 -1);
	assert_non_null(strstr(err, "200 characters"));
	assert_int_equal(count("SELECT count(*) FROM customers WHERE customer_id = $1", "long_url"),
	                 0);
}

static void test_enrol_pending_with_timers_and_return_url(void **state)
{
	char err[256], url[1024], expect[256], token[64], *loc;
	struct customer c;
	PGresult *r;

	(void)state;
	if (customers_enrol(db, gw, &cfg, "cu_1", "ann@example.com", "Ann", T_NOW, url, sizeof(url),
	                    err, sizeof(err)) < 0)
		fail_msg("customers_enrol: %s", err);
	assert_non_null(strstr(url, "/hosted/adduser?token="));
	assert_int_equal(customers_get(db, "cu_1", &c, err, sizeof(err)), 0);
	assert_string_equal(c.state, "pending");
	assert_string_equal(c.email, "ann@example.com");
	assert_string_equal(c.name, "Ann");
	assert_int_equal(c.enrol_expires_at, T_NOW + 72 * 3600);
	assert_int_equal(c.next_check_at, T_NOW + 300);
	assert_string_equal(c.card_masked, "");

	/* the gateway sends the customer back to return_url?customerId=cu_1
	 * with the enrolment's token */
	r = db_query(db, "SELECT enrol_token FROM customers WHERE customer_id = 'cu_1'", 0, NULL,
	             err, sizeof(err));
	assert_non_null(r);
	snprintf(token, sizeof(token), "%s", db_str(r, 0, 0));
	PQclear(r);
	assert_int_equal(strlen(token), 32);
	loc = ts_fakegw_hosted(url, "card=4501161234567214&expiry=0728");
	assert_non_null(loc);
	snprintf(expect, sizeof(expect), "%s?customerId=cu_1&enrolment=%s&", cfg.return_url, token);
	assert_memory_equal(loc, expect, strlen(expect));
	free(loc);

	/* re-enrolment of a pending customer: new timers, details kept */
	if (customers_enrol(db, gw, &cfg, "cu_1", NULL, NULL, T_NOW + 1000, url, sizeof(url), err,
	                    sizeof(err)) < 0)
		fail_msg("customers_enrol again: %s", err);
	assert_int_equal(customers_get(db, "cu_1", &c, err, sizeof(err)), 0);
	assert_string_equal(c.email, "ann@example.com");
	assert_int_equal(c.enrol_expires_at, T_NOW + 1000 + 72 * 3600);
	assert_int_equal(audit_rows("cu_1"), 1); /* pending to pending is no change */
	/* a new enrolment, a new token: the first page's return is not taken */
	assert_int_equal(customers_record_return(db, "cu_1", token, 1, "450116XXXXXX7214", "V",
	                                         "0728", err, sizeof(err)),
	                 CUSTOMERS_UNCHANGED);
	r = db_query(db, "SELECT enrol_token FROM customers WHERE customer_id = 'cu_1'", 0, NULL,
	             err, sizeof(err));
	assert_non_null(r);
	snprintf(token, sizeof(token), "%s", db_str(r, 0, 0));
	PQclear(r);

	/* bound: refused, with the card named */
	assert_int_equal(customers_record_return(db, "cu_1", token, 1, "450116XXXXXX7214", "V",
	                                         "0728", err, sizeof(err)),
	                 CUSTOMERS_CHANGED);
	assert_int_equal(customers_enrol(db, gw, &cfg, "cu_1", NULL, NULL, T_NOW, url, sizeof(url),
	                                 err, sizeof(err)),
	                 -1);
	assert_non_null(strstr(err, "customer cu_1 is already bound to card 450116XXXXXX7214;"));
	assert_int_equal(customers_get(db, "cu_1", &c, err, sizeof(err)), 0);
	assert_string_equal(c.state, "bound");
	assert_int_equal(audit_rows("cu_1"), 2); /* created, bound: the refusal wrote nothing */
}

static void test_enrol_gateway_down_stays_pending(void **state)
{
	char err[256], url[1024];
	struct cfg c = cfg;
	struct gw_client *down;
	struct customer cu;

	(void)state;
	snprintf(c.gateway.base_url, sizeof(c.gateway.base_url), "http://127.0.0.1:9/v2");
	down = gw_client_new(&c.gateway, err, sizeof(err));
	assert_non_null(down);
	assert_int_equal(customers_enrol(db, down, &c, "cu_down", NULL, NULL, T_NOW, url,
	                                 sizeof(url), err, sizeof(err)),
	                 -1);
	assert_non_null(strstr(err, "cc_adduser for cu_down"));
	assert_non_null(strstr(err, "stays pending"));
	assert_int_equal(customers_get(db, "cu_down", &cu, err, sizeof(err)), 0);
	assert_string_equal(cu.state, "pending");
	gw_client_free(down);
}

static void test_record_return(void **state)
{
	char err[256];
	struct customer c;
	long audits;

	(void)state;
	assert_int_equal(customers_record_return(db, "nobody", "t", 1, "450116XXXXXX7214", "V",
	                                         "0728", err, sizeof(err)),
	                 CUSTOMERS_UNKNOWN);
	assert_string_equal(err, "unknown customer 'nobody'");
	assert_int_equal(count("SELECT count(*) FROM customers WHERE customer_id = $1", "nobody"),
	                 0);
	assert_int_equal(
	    db_exec(db, "INSERT INTO customers (customer_id, enrol_token) VALUES ('rr', 'tk')", 0,
	            NULL, err, sizeof(err)),
	    0);

	/* malformed card fields are refused, nothing stored */
	assert_int_equal(customers_record_return(db, "rr", "tk", 1, "4501161234567214", "V", "0728",
	                                         err, sizeof(err)),
	                 CUSTOMERS_INVALID);
	assert_int_equal(customers_record_return(db, "rr", "tk", 1, "450116XXXXXX7214", "V", "1328",
	                                         err, sizeof(err)),
	                 CUSTOMERS_INVALID);
	assert_int_equal(customers_record_return(db, "rr", "tk", 1, "450116XXXXXX7214", "V;--",
	                                         "0728", err, sizeof(err)),
	                 CUSTOMERS_INVALID);
	assert_int_equal(customers_get(db, "rr", &c, err, sizeof(err)), 0);
	assert_string_equal(c.state, "pending");

	/* failure, then a replay of it */
	assert_int_equal(customers_record_return(db, "rr", "tk", 0, "", "", "", err, sizeof(err)),
	                 CUSTOMERS_CHANGED);
	audits = audit_rows("rr");
	assert_int_equal(customers_record_return(db, "rr", "tk", 0, "", "", "", err, sizeof(err)),
	                 CUSTOMERS_UNCHANGED);
	assert_int_equal(audit_rows("rr"), audits);

	/* success after a failure binds; a replay writes nothing */
	assert_int_equal(customers_record_return(db, "rr", "tk", 1, "450116XXXXXX7214", "V", "0728",
	                                         err, sizeof(err)),
	                 CUSTOMERS_CHANGED);
	audits = audit_rows("rr");
	assert_int_equal(customers_record_return(db, "rr", "tk", 1, "450116XXXXXX7214", "V", "0728",
	                                         err, sizeof(err)),
	                 CUSTOMERS_UNCHANGED);
	assert_int_equal(customers_record_return(db, "rr", "tk", 0, "", "", "", err, sizeof(err)),
	                 CUSTOMERS_UNCHANGED); /* a late failure never unbinds */
	assert_int_equal(audit_rows("rr"), audits);
	assert_int_equal(customers_get(db, "rr", &c, err, sizeof(err)), 0);
	assert_string_equal(c.state, "bound");
	assert_string_equal(c.card_masked, "450116XXXXXX7214");
	assert_string_equal(c.card_type, "V");
	assert_string_equal(c.card_expiry, "0728");
}

static void test_set_state(void **state)
{
	char err[256];
	struct customer c;

	(void)state;
	assert_int_equal(db_exec(db, "INSERT INTO customers (customer_id) VALUES ('ss')", 0, NULL,
	                         err, sizeof(err)),
	                 0);
	assert_int_equal(customers_set_state(db, "ss", "unbound", err, sizeof(err)), 0);
	assert_int_equal(customers_get(db, "ss", &c, err, sizeof(err)), 0);
	assert_string_equal(c.state, "unbound");
	assert_int_equal(customers_set_state(db, "ss", "gone", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "bad customer state 'gone'"));
	assert_int_equal(customers_set_state(db, "nobody", "bound", err, sizeof(err)), -1);
	assert_string_equal(err, "unknown customer 'nobody'");
}

/* The ids customers_list returns, space-separated. */
static const char *list_ids(int days)
{
	static char out[512];
	struct customer *cs;
	char err[256];
	size_t at = 0;
	int n, i;

	if (customers_list(db, days, T_NOW, &cs, &n, err, sizeof(err)) < 0)
		fail_msg("customers_list: %s", err);
	out[0] = '\0';
	for (i = 0; i < n; i++)
		if (strncmp(cs[i].id, "x_", 2) == 0)
			at += (size_t)snprintf(out + at, sizeof(out) - at, "%s%s", at ? " " : "",
			                       cs[i].id);
	free(cs);
	return out;
}

static void test_list_expiring(void **state)
{
	struct customers_counts cc;
	struct customer *cs;
	char err[256];
	int n;

	(void)state;
	assert_int_equal(
	    db_exec(db,
	            "INSERT INTO customers (customer_id, state, card_masked, card_expiry) VALUES "
	            "('x_soon', 'bound', '450116XXXXXX7214', '0630'), " /* to 2030-07-01 */
	            "('x_expired', 'bound', '450116XXXXXX7214', '0530'), "
	            "('x_far', 'bound', '450116XXXXXX7214', '0730'), " /* to 2030-08-01 */
	            "('x_next_year', 'bound', '450116XXXXXX7214', '0631'), "
	            "('x_failed', 'failed', '450116XXXXXX7214', '0630'), "
	            "('x_pending', 'pending', NULL, NULL)",
	            0, NULL, err, sizeof(err)),
	    0);
	assert_string_equal(list_ids(-1), "x_expired x_failed x_far x_next_year x_pending x_soon");
	assert_string_equal(list_ids(0), "x_expired");
	assert_string_equal(list_ids(15), "x_expired");
	assert_string_equal(list_ids(16), "x_expired x_soon"); /* 2030-07-01 exactly */
	assert_string_equal(list_ids(30), "x_expired x_soon");
	assert_string_equal(list_ids(47), "x_expired x_far x_soon");
	assert_string_equal(list_ids(400), "x_expired x_far x_next_year x_soon");
	assert_string_equal(list_ids(2147483647), "x_expired x_far x_next_year x_soon");

	/* the count agrees with the list (which also holds the other tests' customers) */
	assert_int_equal(customers_list(db, 30, T_NOW, &cs, &n, err, sizeof(err)), 0);
	free(cs);
	assert_int_equal(customers_count(db, 30, T_NOW, &cc, err, sizeof(err)), 0);
	assert_int_equal(cc.expiring, n);
	assert_int_equal(cc.state[0],
	                 count("SELECT count(*) FROM customers WHERE state = $1", "pending"));
	assert_int_equal(cc.state[1],
	                 count("SELECT count(*) FROM customers WHERE state = $1", "bound"));
	assert_int_equal(cc.state[2],
	                 count("SELECT count(*) FROM customers WHERE state = $1", "failed"));
	assert_int_equal(cc.state[3],
	                 count("SELECT count(*) FROM customers WHERE state = $1", "unbound"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_get_unknown),
	    cmocka_unit_test(test_enrol_refuses_bad_input_before_anything),
	    cmocka_unit_test(test_enrol_pending_with_timers_and_return_url),
	    cmocka_unit_test(test_enrol_gateway_down_stays_pending),
	    cmocka_unit_test(test_record_return),
	    cmocka_unit_test(test_set_state),
	    cmocka_unit_test(test_list_expiring),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
