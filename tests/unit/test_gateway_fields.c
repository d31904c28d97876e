/* test_gateway_fields.c: parsing and verification of the gateway's signed
 * messages (gw_fields_*). Signatures were worked out by hand:
 *   cardNumber=450116XXXXXX7214&cardType=V&customerId=c 1&expirationDate=0728&
 *   retCode=SUCCESS&key=TESTKEY0123456789abcdef            -> A48605619E34...
 *   amount=2000&currency=CAD&mchId=10000701&mchOrderNo=T-1&payOrderId=P100&
 *   paySuccTime=2026-01-01 10:00:00&status=2&key=TESTKEY0123456789abcdef -> CBE78100B94D... */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "gateway.h"

#define KEY        "TESTKEY0123456789abcdef"
#define RET_SIGN   "A48605619E3467248B38411DB62C394A"
#define NOTIFY_SIG "CBE78100B94D7F826823342A96D9216A"
#define RETURN_QS                                                                                  \
	"retCode=SUCCESS&customerId=c%201&cardNumber=450116XXXXXX7214&expirationDate=0728&"        \
	"cardType=V&sign=" RET_SIGN

static void test_query_parse_and_verify(void **state)
{
	struct gw_fields f;
	char err[128];

	(void)state;
	assert_int_equal(gw_fields_from_query(RETURN_QS, &f, err, sizeof(err)), 0);
	assert_int_equal(f.n, 6);
	assert_string_equal(gw_fields_get(&f, "customerId"), "c 1"); /* %20 decoded */
	assert_string_equal(gw_fields_get(&f, "retCode"), "SUCCESS");
	assert_null(gw_fields_get(&f, "payOrderId"));
	assert_int_equal(gw_fields_verify(&f, KEY), 1);
	assert_int_equal(gw_fields_verify(&f, "otherkey"), 0);
	gw_fields_free(&f);

	/* '+' is a space too, a leading '?' and empty segments are ignored */
	assert_int_equal(gw_fields_from_query("?retCode=SUCCESS&&customerId=c+1&cardNumber="
	                                      "450116XXXXXX7214&expirationDate=0728&cardType=V&"
	                                      "sign=" RET_SIGN "&",
	                                      &f, err, sizeof(err)),
	                 0);
	assert_int_equal(gw_fields_verify(&f, KEY), 1);
	gw_fields_free(&f);
}

static void test_query_tampered(void **state)
{
	struct gw_fields f;
	char err[128];

	(void)state;
	/* the customer id changed */
	assert_int_equal(gw_fields_from_query("retCode=SUCCESS&customerId=c%202&cardNumber="
	                                      "450116XXXXXX7214&expirationDate=0728&cardType=V&"
	                                      "sign=" RET_SIGN,
	                                      &f, err, sizeof(err)),
	                 0);
	assert_int_equal(gw_fields_verify(&f, KEY), 0);
	gw_fields_free(&f);
	/* a FAIL dressed as SUCCESS */
	assert_int_equal(gw_fields_from_query("retCode=FAIL&customerId=c%201&cardNumber="
	                                      "450116XXXXXX7214&expirationDate=0728&cardType=V&"
	                                      "sign=" RET_SIGN,
	                                      &f, err, sizeof(err)),
	                 0);
	assert_int_equal(gw_fields_verify(&f, KEY), 0);
	gw_fields_free(&f);
	/* no signature at all */
	assert_int_equal(
	    gw_fields_from_query("retCode=SUCCESS&customerId=c1", &f, err, sizeof(err)), 0);
	assert_int_equal(gw_fields_verify(&f, KEY), 0);
	gw_fields_free(&f);
}

static void test_query_malformed(void **state)
{
	static const char *const bad[] = {
	    "a=%4",                         /* truncated escape */
	    "a=%zz",                        /* not hex */
	    "a=1%00b",                      /* NUL */
	    "=1&b=2",                       /* no name */
	    "retCode=SUCCESS&retCode=FAIL", /* a second value for one key */
	};
	struct gw_fields f;
	char err[128];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		assert_int_equal(gw_fields_from_query(bad[i], &f, err, sizeof(err)), -1);
		assert_true(err[0] != '\0');
		assert_null(f.buf);
	}
	assert_int_equal(gw_fields_from_query("retCode=SUCCESS&retCode=FAIL", &f, err, sizeof(err)),
	                 -1);
	assert_non_null(strstr(err, "retCode"));
}

static void test_bounds(void **state)
{
	char qs[GW_MAX_FIELDS * 8 + 16], *big, err[128];
	struct gw_fields f;
	size_t at = 0;

	(void)state;
	for (int i = 0; i < GW_MAX_FIELDS; i++)
		at += (size_t)snprintf(qs + at, sizeof(qs) - at, "%sk%d=v", i ? "&" : "", i);
	assert_int_equal(gw_fields_from_query(qs, &f, err, sizeof(err)), 0);
	assert_int_equal(f.n, GW_MAX_FIELDS);
	gw_fields_free(&f);
	snprintf(qs + at, sizeof(qs) - at, "&one=more");
	assert_int_equal(gw_fields_from_query(qs, &f, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "fields"));

	big = malloc(GW_MAX_INPUT + 2);
	assert_non_null(big);
	memset(big, 'a', GW_MAX_INPUT + 1);
	big[0] = 'k';
	big[1] = '=';
	big[GW_MAX_INPUT + 1] = '\0';
	assert_int_equal(gw_fields_from_query(big, &f, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "longer"));
	big[GW_MAX_INPUT] = '\0'; /* exactly the limit is fine */
	assert_int_equal(gw_fields_from_query(big, &f, err, sizeof(err)), 0);
	gw_fields_free(&f);
	assert_int_equal(gw_fields_from_json(big, GW_MAX_INPUT + 1, &f, err, sizeof(err)), -1);
	free(big);
}

static void test_json_notify(void **state)
{
	const char *body = "{\"payOrderId\":\"P100\",\"mchId\":\"10000701\",\"mchOrderNo\":\"T-1\","
	                   "\"transId\":\"\",\"currency\":\"CAD\",\"amount\":2000,\"status\":2,"
	                   "\"paySuccTime\":\"2026-01-01 10:00:00\",\"cardType\":null,"
	                   "\"sign\":\"" NOTIFY_SIG "\"}";
	struct gw_fields f;
	char err[128];

	(void)state;
	assert_int_equal(gw_fields_from_json(body, strlen(body), &f, err, sizeof(err)), 0);
	assert_int_equal(f.n, 10);
	assert_string_equal(gw_fields_get(&f, "amount"), "2000"); /* numbers as their digits */
	assert_string_equal(gw_fields_get(&f, "status"), "2");
	assert_string_equal(gw_fields_get(&f, "cardType"), "");
	assert_int_equal(gw_fields_verify(&f, KEY), 1);
	gw_fields_free(&f);
}

static void test_json_tampered_and_malformed(void **state)
{
	const char *tampered =
	    "{\"payOrderId\":\"P100\",\"mchId\":\"10000701\",\"mchOrderNo\":"
	    "\"T-1\",\"currency\":\"CAD\",\"amount\":200000,\"status\":2,"
	    "\"paySuccTime\":\"2026-01-01 10:00:00\",\"sign\":\"" NOTIFY_SIG "\"}";
	static const char *const bad[] = {
	    "",
	    "SUCCESS",
	    "[1,2]",
	    "{\"a\":\"1\"",                        /* truncated */
	    "{\"a\":\"1\"} trailing",              /* more than one object */
	    "{\"a\":{\"nested\":1}}",              /* not flat */
	    "{\"a\":[1]}",                         /* not flat */
	    "{\"status\":\"2\",\"status\":\"3\"}", /* a second value for one key */
	};
	struct gw_fields f;
	char err[128];

	(void)state;
	assert_int_equal(gw_fields_from_json(tampered, strlen(tampered), &f, err, sizeof(err)), 0);
	assert_int_equal(gw_fields_verify(&f, KEY), 0);
	gw_fields_free(&f);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(gw_fields_from_json(bad[i], strlen(bad[i]), &f, err, sizeof(err)),
		                 -1);
		assert_null(f.buf);
	}
}

/* An error names the field without its control bytes: it is one line
 * (found by tests/fuzz/fuzz_callback). */
static void test_errors_one_line(void **state)
{
	struct gw_fields f;
	char err[256];

	(void)state;
	assert_int_equal(gw_fields_from_query("a%0Ab=1&a%0Ab=2", &f, err, sizeof(err)), -1);
	assert_string_equal(err, "field a b appears twice");
	assert_int_equal(gw_fields_from_json("{\"a\\r\\nb\":[1]}", 14, &f, err, sizeof(err)), -1);
	assert_string_equal(err, "field a  b is not a string or number");
	assert_int_equal(
	    gw_fields_from_json("{\"\\u001b[2J\":1,\"\\u001b[2J\":2}", 29, &f, err, sizeof(err)),
	    -1);
	assert_string_equal(err, "field  [2J appears twice");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_query_parse_and_verify),
	    cmocka_unit_test(test_query_tampered),
	    cmocka_unit_test(test_query_malformed),
	    cmocka_unit_test(test_bounds),
	    cmocka_unit_test(test_json_notify),
	    cmocka_unit_test(test_json_tampered_and_malformed),
	    cmocka_unit_test(test_errors_one_line),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
