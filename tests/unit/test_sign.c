/* test_sign.c: the gateway signature (daemon/sign.c) against vectors worked
 * out by hand: each canonical string is written out below and its MD5 was
 * computed independently with `printf '%s' '<string>' | md5sum`. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "sign.h"

#define KEY "TESTKEY0123456789abcdef"

/* The API document's request example, in its own field order. */
static const struct sign_kv demo[] = {
    {"customerId", "0000000123"},
    {"mchOrderNo", "m12345"},
    {"mchId", "10000701"},
    {"currency", "CAD"},
    {"amount", "100"},
    {"jobNo", "jack"},
    {"notifyUrl", "http://yourdomain.com/notifyme.php"},
    {"returnUrl", "http://yourdomain.com/returnhere.php"},
    {"subject", "ipad pro"},
    {"body", "64G,wifi,white"},
};
#define NDEMO (sizeof(demo) / sizeof(demo[0]))

/* amount=100&body=64G,wifi,white&currency=CAD&customerId=0000000123&jobNo=jack&
 * mchId=10000701&mchOrderNo=m12345&notifyUrl=http://yourdomain.com/notifyme.php&
 * returnUrl=http://yourdomain.com/returnhere.php&subject=ipad pro&key=TESTKEY0123456789abcdef */
#define DEMO_SIGN "9B057348289DFD8B56C6C25CC89C23C1"

static void test_hand_vector(void **state)
{
	char sig[33];

	(void)state;
	sign_compute(demo, NDEMO, KEY, sig);
	assert_string_equal(sig, DEMO_SIGN);
	assert_int_equal(sign_verify(demo, NDEMO, KEY, DEMO_SIGN), 1);
}

static void test_order_does_not_matter(void **state)
{
	struct sign_kv rev[NDEMO];
	char sig[33];

	(void)state;
	for (size_t i = 0; i < NDEMO; i++)
		rev[i] = demo[NDEMO - 1 - i];
	sign_compute(rev, NDEMO, KEY, sig);
	assert_string_equal(sig, DEMO_SIGN);
}

static void test_empty_and_sign_fields_dropped(void **state)
{
	struct sign_kv kv[NDEMO + 3];
	char sig[33];

	(void)state;
	memcpy(kv, demo, sizeof(demo));
	kv[NDEMO] = (struct sign_kv){"originalOrderId", ""};
	kv[NDEMO + 1] = (struct sign_kv){"sign", "C380BEC2BFD727A4B6845133519F3AD6"};
	kv[NDEMO + 2] = (struct sign_kv){"transId", NULL};
	sign_compute(kv, NDEMO + 3, KEY, sig);
	assert_string_equal(sig, DEMO_SIGN);
	assert_int_equal(sign_verify(kv, NDEMO + 3, KEY, DEMO_SIGN), 1);
}

static void test_extra_field_changes_signature(void **state)
{
	struct sign_kv kv[NDEMO + 1];

	(void)state;
	memcpy(kv, demo, sizeof(demo));
	kv[NDEMO] = (struct sign_kv){"status", "2"};
	assert_int_equal(sign_verify(kv, NDEMO + 1, KEY, DEMO_SIGN), 0);
}

static void test_wrong_key(void **state)
{
	(void)state;
	assert_int_equal(sign_verify(demo, NDEMO, "TESTKEY0123456789abcdeF", DEMO_SIGN), 0);
	assert_int_equal(sign_verify(demo, NDEMO, "", DEMO_SIGN), 0);
}

static void test_tampered_value(void **state)
{
	struct sign_kv kv[NDEMO];

	(void)state;
	memcpy(kv, demo, sizeof(demo));
	kv[4].value = "1000"; /* amount */
	assert_int_equal(sign_verify(kv, NDEMO, KEY, DEMO_SIGN), 0);
}

static void test_bad_signature_text(void **state)
{
	(void)state;
	/* one character off, lowercase, truncated, missing */
	assert_int_equal(sign_verify(demo, NDEMO, KEY, "9B057348289DFD8B56C6C25CC89C23C2"), 0);
	assert_int_equal(sign_verify(demo, NDEMO, KEY, "9b057348289dfd8b56c6c25cc89c23c1"), 0);
	assert_int_equal(sign_verify(demo, NDEMO, KEY, "9B057348289DFD8B56C6C25CC89C23C"), 0);
	assert_int_equal(sign_verify(demo, NDEMO, KEY, NULL), 0);
}

/* Keys sort without regard to case: "alpha" < "mchId" < "Zeta", whereas a
 * byte-wise sort would put "Zeta" first.
 *   alpha=1&mchId=10000701&Zeta=2&key=TESTKEY0123456789abcdef -> 53C745F4...
 *   Zeta=2&alpha=1&mchId=10000701&key=TESTKEY0123456789abcdef -> 4638393991... (wrong) */
static void test_case_insensitive_order(void **state)
{
	const struct sign_kv kv[] = {{"Zeta", "2"}, {"mchId", "10000701"}, {"alpha", "1"}};
	char sig[33];

	(void)state;
	sign_compute(kv, 3, KEY, sig);
	assert_string_equal(sig, "53C745F43BECDF1359179834C7DD0973");
	assert_string_not_equal(sig, "4638393991A7560247949642ECD9F8A7");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_hand_vector),
	    cmocka_unit_test(test_order_does_not_matter),
	    cmocka_unit_test(test_empty_and_sign_fields_dropped),
	    cmocka_unit_test(test_extra_field_changes_signature),
	    cmocka_unit_test(test_wrong_key),
	    cmocka_unit_test(test_tampered_value),
	    cmocka_unit_test(test_bad_signature_text),
	    cmocka_unit_test(test_case_insensitive_order),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
