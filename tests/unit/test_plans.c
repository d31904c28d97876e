/* test_plans.c: plan files (the shipped examples and every kind of bad file,
 * each error with its file and line) and the plan-level calendar rules. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <ftw.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "billing.h"
#include "plans.h"

static char tmp[64];

static const char *GOOD = "code: basic\n"
                          "name: Basic\n"
                          "amount: 1500\n"
                          "currency: CAD\n"
                          "interval: month\n"
                          "interval_count: 1\n";

/* Writes tmp/<name> and returns its path (static buffer). */
static const char *write_file(const char *name, const char *text)
{
	static char path[256];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", tmp, name);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	return path;
}

/* Loading text as tmp/<name> fails with exactly "<path>:<want>". */
static void expect_error(const char *name, const char *text, const char *want)
{
	char err[512], expected[512];
	struct plan p;
	const char *path = write_file(name, text);

	snprintf(expected, sizeof(expected), "%s:%s", path, want);
	assert_int_equal(plans_load_file(path, &p, err, sizeof(err)), -1);
	assert_string_equal(err, expected);
	remove(path);
}

static void test_examples(void **state)
{
	struct plan *p;
	int n;
	char err[512];

	(void)state;
	if (plans_load_dir("plans", &p, &n, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	assert_int_equal(n, 4);
	assert_string_equal(p[0].code, "annual");
	assert_int_equal(p[0].interval, CAL_YEAR);
	assert_int_equal(p[0].amount, 29000);
	assert_int_equal(p[0].on_exhausted, PLAN_CANCEL);
	assert_string_equal(p[1].code, "instalments");
	assert_int_equal(p[1].cycles, 12);
	assert_int_equal(p[1].interval, CAL_MONTH);
	assert_string_equal(p[2].code, "monthly");
	assert_string_equal(p[2].name, "Pro (monthly)");
	assert_int_equal(p[2].amount, 2900);
	assert_int_equal(p[2].trial_days, 14);
	assert_int_equal(p[2].cycles, 0);
	assert_int_equal(p[2].nretry, 3);
	assert_int_equal(p[2].retry[0].amount, 1);
	assert_int_equal(p[2].retry[2].amount, 7);
	assert_int_equal(p[2].retry[2].unit, 'd');
	assert_int_equal(p[2].on_exhausted, PLAN_PAST_DUE);
	assert_string_equal(p[3].code, "weekly");
	assert_int_equal(p[3].interval, CAL_WEEK);
	assert_int_equal(p[3].retry[0].unit, 'h');
	assert_int_equal(p[3].on_exhausted, PLAN_PAUSE);
	free(p);
}

static void test_defaults(void **state)
{
	struct plan p;
	char err[512];

	(void)state;
	if (plans_load_file(write_file("basic.yaml", GOOD), &p, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	assert_int_equal(p.trial_days, 0);
	assert_int_equal(p.cycles, 0);
	assert_int_equal(p.nretry, 0);
	assert_int_equal(p.on_exhausted, PLAN_PAST_DUE);
	assert_int_equal(p.id, 0);
}

static void test_largest_amount(void **state)
{
	struct plan p;
	char err[512];

	(void)state;
	if (plans_load_file(write_file("basic.yaml",
	                               "code: basic\nname: Basic\namount: 2147483647\n"
	                               "currency: CAD\ninterval: month\ninterval_count: 1\n"),
	                    &p, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	assert_int_equal(p.amount, 2147483647);
}

static void test_bad_values(void **state)
{
	(void)state;
	expect_error("basic.yaml",
	             "code: basic\nname: Basic\namount: 1500\ncurrency: CAD\n"
	             "interval: fortnight\ninterval_count: 1\n",
	             "5: interval: must be day, week, month or year, got 'fortnight'");
	expect_error("basic.yaml",
	             "code: basic\nname: Basic\ncurrency: CAD\namount: -5\n"
	             "interval: month\ninterval_count: 1\n",
	             "4: amount: must be a positive integer (cents) up to 2147483647, got '-5'");
	expect_error("basic.yaml",
	             "code: basic\nname: Basic\namount: 0\ncurrency: CAD\n"
	             "interval: month\ninterval_count: 1\n",
	             "3: amount: must be a positive integer (cents) up to 2147483647, got '0'");
	expect_error("basic.yaml",
	             "code: basic\nname: Basic\namount: 15.00\ncurrency: CAD\n"
	             "interval: month\ninterval_count: 1\n",
	             "3: amount: must be a positive integer (cents) up to 2147483647, got "
	             "'15.00'");
	/* The gateway's amount is a 32-bit integer: a larger one would be
	 * refused at every attempt. */
	expect_error("basic.yaml",
	             "code: basic\nname: Basic\namount: 2147483648\ncurrency: CAD\n"
	             "interval: month\ninterval_count: 1\n",
	             "3: amount: must be a positive integer (cents) up to 2147483647, got "
	             "'2147483648'");
	expect_error("basic.yaml",
	             "code: basic\nname: Basic\namount: 1500\ncurrency: USD\n"
	             "interval: month\ninterval_count: 1\n",
	             "4: currency: must be CAD (the only currency of the gateway), got 'USD'");
	expect_error("basic.yaml",
	             "code: basic\nname: Basic\namount: 1500\ncurrency: CAD\n"
	             "interval: month\ninterval_count: 0\n",
	             "6: interval_count: must be an integer from 1 to 1000, got '0'");
	expect_error("basic.yaml",
	             "code: basic\nname: Basic\namount: 1500\ncurrency: CAD\n"
	             "interval: month\ninterval_count: 1\ntrial_days: -1\n",
	             "7: trial_days: must be an integer from 0 to 3650 (days), got '-1'");
	expect_error("basic.yaml",
	             "code: basic\nname: Basic\namount: 1500\ncurrency: CAD\n"
	             "interval: month\ninterval_count: 1\ncycles: 0\n",
	             "7: cycles: must be a positive integer (number of payments), got '0'");
	expect_error("Basic.yaml",
	             "code: Basic\nname: Basic\namount: 1500\ncurrency: CAD\n"
	             "interval: month\ninterval_count: 1\n",
	             "1: code: must be 1 to 40 characters of a-z, 0-9, _ and -, got 'Basic'");
	expect_error("basic.yaml",
	             "code: basic\nname: \"Two\\nlines\"\namount: 1500\ncurrency: CAD\n"
	             "interval: month\ninterval_count: 1\n",
	             "2: name: must be one line of 1 to 127 bytes, got the quoted string "
	             "\"Two\\nlines\"");
}

static void test_bad_retry(void **state)
{
	char text[1024];

	(void)state;
	snprintf(text, sizeof(text), "%sretry:\n  schedule:\n    - 1d\n    - 2x\n", GOOD);
	expect_error("basic.yaml", text,
	             "10: retry.schedule: must be durations such as 1d, 3d, 2w or 12h, got '2x'");
	snprintf(text, sizeof(text), "%sretry:\n  schedule: [1d, 0d]\n", GOOD);
	expect_error("basic.yaml", text,
	             "8: retry.schedule: must be durations such as 1d, 3d, 2w or 12h, got '0d'");
	snprintf(text, sizeof(text), "%sretry:\n  schedule: [1d]\n  on_exhausted: refund\n", GOOD);
	expect_error("basic.yaml", text,
	             "9: retry.on_exhausted: must be cancel, past_due or pause, got 'refund'");
	snprintf(text, sizeof(text), "%sretry:\n  schedule: [1d]\n  backoff: 2\n", GOOD);
	expect_error("basic.yaml", text,
	             "9: retry: unknown key 'backoff' (expected schedule, on_exhausted)");
	snprintf(text, sizeof(text),
	         "%sretry:\n  schedule: [1d,1d,1d,1d,1d,1d,1d,1d,1d,1d,1d,1d,1d,1d,1d,1d,1d]\n",
	         GOOD);
	expect_error("basic.yaml", text, "8: retry.schedule: at most 16 retries");
}

static void test_unknown_missing_duplicate_key(void **state)
{
	char text[1024];

	(void)state;
	snprintf(text, sizeof(text), "%scolour: blue\n", GOOD);
	expect_error("basic.yaml", text,
	             "7: colour: unknown key (expected code, name, amount, currency, interval, "
	             "interval_count, trial_days, cycles, retry)");
	expect_error("basic.yaml",
	             "code: basic\nname: Basic\namount: 1500\ninterval: month\ninterval_count: 1\n",
	             "1: currency: missing required key");
	expect_error("basic.yaml",
	             "\n# comment\ncode: basic\nname: Basic\namount: 1500\ncurrency: CAD\n"
	             "interval_count: 1\n",
	             "3: interval: missing required key");
	snprintf(text, sizeof(text), "%samount: 1600\n", GOOD);
	expect_error("basic.yaml", text, "7: amount: duplicate key");
}

static void test_wrong_types(void **state)
{
	char text[1024];

	(void)state;
	expect_error("basic.yaml",
	             "code: basic\nname: Basic\namount: \"1500\"\ncurrency: CAD\n"
	             "interval: month\ninterval_count: 1\n",
	             "3: amount: must be a positive integer (cents) up to 2147483647, got the "
	             "quoted string \"1500\"");
	expect_error("basic.yaml",
	             "code: basic\nname: [Basic, Plan]\namount: 1500\ncurrency: CAD\n"
	             "interval: month\ninterval_count: 1\n",
	             "2: name: must be one line of 1 to 127 bytes, got a list");
	snprintf(text, sizeof(text), "%sretry: 3\n", GOOD);
	expect_error("basic.yaml", text,
	             "7: retry: must be a mapping with schedule and on_exhausted, got '3'");
	snprintf(text, sizeof(text), "%sretry:\n  schedule: 1d\n", GOOD);
	expect_error(
	    "basic.yaml", text,
	    "8: retry.schedule: must be a list of durations such as [1d, 3d, 7d], got '1d'");
	snprintf(text, sizeof(text), "%scycles:\n  count: 12\n", GOOD);
	expect_error("basic.yaml", text,
	             "8: cycles: must be a positive integer (number of payments), got a mapping");
	/* the value echoed is one line, whatever it holds (found by fuzz_plans) */
	expect_error("basic.yaml",
	             "code: basic\nname: Basic\namount: 1500\ncurrency: CAD\n"
	             "interval: month\n\n  weekly\ninterval_count: 1\n",
	             "5: interval: must be day, week, month or year, got 'month\\nweekly'");
	expect_error("basic.yaml",
	             "code: basic\nname: Basic\namount: 1500\ncurrency: CAD\n"
	             "interval: \"mo\\r\\x1b[2J\\\"\"\ninterval_count: 1\n",
	             "5: interval: must be day, week, month or year, got the quoted string "
	             "\"mo\\r\\x1b[2J\\\"\"");
	snprintf(text, sizeof(text), "%s\"cy\\ncles\": 1\n", GOOD);
	expect_error("basic.yaml", text,
	             "7: cy\\ncles: unknown key (expected code, name, amount, currency, interval, "
	             "interval_count, trial_days, cycles, retry)");
	expect_error("basic.yaml", "- code: basic\n- name: Basic\n",
	             "1: plan: expected a mapping of keys (code, name, amount, ...)");
}

static void test_malformed_yaml(void **state)
{
	char text[1024];

	(void)state;
	expect_error("basic.yaml",
	             "code: basic\nname: Basic\namount: 1500\ncurrency: CAD: x\n"
	             "interval: month\ninterval_count: 1\n",
	             "4: malformed YAML: mapping values are not allowed in this context");
	expect_error(
	    "basic.yaml",
	    "code: basic\nname: Basic\nretry:\n  schedule: [1d, 3d\n  on_exhausted: cancel\n",
	    "5: malformed YAML: did not find expected ',' or ']' (while parsing a flow "
	    "sequence)");
	expect_error("basic.yaml", "# nothing yet\n", "1: empty file: expected the keys of a plan");
	snprintf(text, sizeof(text), "%s---\ncode: other\n", GOOD);
	expect_error("basic.yaml", text, "8: plan: one YAML document per plan file");
}

static void test_code_must_match_file_name(void **state)
{
	char err[512];
	struct plan p;

	(void)state;
	expect_error("premium.yaml", GOOD,
	             "1: code: 'basic' does not match the file name (expected basic.yaml)");
	expect_error("basic.yml", GOOD,
	             "1: code: 'basic' does not match the file name (expected basic.yaml)");
	assert_int_equal(plans_load_file("/nonexistent/basic.yaml", &p, err, sizeof(err)), -1);
	assert_string_equal(err, "/nonexistent/basic.yaml: No such file or directory");
}

static void test_duplicate_code_across_files(void **state)
{
	char dir[128], path[192], err[512], want[512];
	struct plan *p;
	int n;
	FILE *f;

	(void)state;
	snprintf(dir, sizeof(dir), "%s/dup", tmp);
	assert_int_equal(mkdir(dir, 0700), 0);
	snprintf(path, sizeof(path), "%s/basic.yaml", dir);
	f = fopen(path, "w");
	fputs(GOOD, f);
	fclose(f);
	snprintf(path, sizeof(path), "%s/basic-copy.yaml", dir);
	f = fopen(path, "w");
	fputs("# a copy, code not changed\n", f);
	fputs(GOOD, f);
	fclose(f);
	assert_int_equal(plans_load_dir(dir, &p, &n, err, sizeof(err)), -1);
	assert_null(p);
	snprintf(want, sizeof(want),
	         "%s/basic.yaml:1: code: 'basic' is also the code of %s/basic-copy.yaml", dir, dir);
	assert_string_equal(err, want);

	/* An editor's backup and other names are not plan files. */
	remove(path);
	snprintf(path, sizeof(path), "%s/.basic.yaml", dir);
	f = fopen(path, "w");
	fputs("junk: [", f);
	fclose(f);
	snprintf(path, sizeof(path), "%s/README", dir);
	f = fopen(path, "w");
	fputs("junk: [", f);
	fclose(f);
	if (plans_load_dir(dir, &p, &n, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	assert_int_equal(n, 1);
	free(p);

	assert_int_equal(plans_load_dir("/nonexistent", &p, &n, err, sizeof(err)), -1);
	assert_string_equal(err, "plans directory '/nonexistent': No such file or directory");
}

/* Literal instants (cal_parse_time has its own tests in test_calendar). */
static int64_t instant(const char *iso)
{
	char err[256];
	int64_t t;

	if (cal_parse_time(iso, &t, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	return t;
}

/* The plan files' rules through the billing rules (billing_apply): trial,
 * periods from the anchor, fixed cycles, retries from the failed attempt. */
static void test_calendar_rules(void **state)
{
	struct plan monthly, instalments;
	struct billing_sub s;
	char err[512];
	int64_t anchor;
	int64_t failed = instant("2026-03-07T15:20:00-05:00");

	(void)state;
	if (plans_load_file("plans/monthly.yaml", &monthly, err, sizeof(err)) < 0 ||
	    plans_load_file("plans/instalments.yaml", &instalments, err, sizeof(err)) < 0)
		fail_msg("%s", err);

	/* The 14-day trial shifts every paid period: first charge 14 local days
	 * after the start (across the spring transition), then monthly. */
	anchor = billing_anchor(instant("2026-02-28T09:00:00-05:00"), monthly.trial_days);
	assert_int_equal(anchor, instant("2026-03-14T09:00:00-04:00"));
	assert_int_equal(billing_anchor(anchor, 0), anchor);
	s = (struct billing_sub){.anchor = anchor, .state = BILLING_TRIALING};
	billing_apply(&monthly, &s, BILLING_SUCCEEDED, anchor);
	assert_int_equal(s.period_start, anchor);
	assert_int_equal(s.period_end, instant("2026-04-14T09:00:00-04:00"));

	/* Twelve payments, then the subscription ends at the end of the twelfth
	 * period. */
	anchor = instant("2026-01-31T10:00:00-05:00");
	s = (struct billing_sub){.anchor = anchor, .state = BILLING_ACTIVE};
	for (int n = 0; n < 11; n++)
		billing_apply(&instalments, &s, BILLING_SUCCEEDED, s.next_charge_at);
	assert_int_equal(s.state, BILLING_ACTIVE);
	billing_apply(&instalments, &s, BILLING_SUCCEEDED, s.next_charge_at);
	assert_int_equal(s.period_start, instant("2026-12-31T10:00:00-05:00"));
	assert_int_equal(s.period_end, instant("2027-01-31T10:00:00-05:00"));
	assert_int_equal(s.state, BILLING_ENDED);
	assert_int_equal(s.next_charge_at, 0);

	/* Retries count from the failed attempt: 1d, 3d, 7d local days. */
	s = (struct billing_sub){.anchor = anchor, .state = BILLING_ACTIVE};
	billing_apply(&monthly, &s, BILLING_DECLINED, failed);
	assert_int_equal(s.next_charge_at, instant("2026-03-08T15:20:00-04:00"));
	billing_apply(&monthly, &s, BILLING_DECLINED, instant("2026-03-08T15:21:07-04:00"));
	assert_int_equal(s.next_charge_at, instant("2026-03-11T15:21:07-04:00"));
	billing_apply(&monthly, &s, BILLING_DECLINED, failed);
	assert_int_equal(s.next_charge_at, instant("2026-03-14T15:20:00-04:00"));
	billing_apply(&monthly, &s, BILLING_DECLINED, failed);
	assert_int_equal(s.next_charge_at, 0);
	assert_int_equal(s.state, BILLING_PAST_DUE);
	assert_string_equal(plans_exhausted_name(monthly.on_exhausted), "past_due");
	assert_string_equal(plans_exhausted_name(PLAN_CANCEL), "cancel");
	assert_string_equal(plans_exhausted_name(PLAN_PAUSE), "pause");
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int setup(void **state)
{
	(void)state;
	setenv("TZ", "America/Toronto", 1);
	tzset();
	snprintf(tmp, sizeof(tmp), "/tmp/test_plans.XXXXXX");
	return mkdtemp(tmp) ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	return nftw(tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_examples),
	    cmocka_unit_test(test_defaults),
	    cmocka_unit_test(test_largest_amount),
	    cmocka_unit_test(test_bad_values),
	    cmocka_unit_test(test_bad_retry),
	    cmocka_unit_test(test_unknown_missing_duplicate_key),
	    cmocka_unit_test(test_wrong_types),
	    cmocka_unit_test(test_malformed_yaml),
	    cmocka_unit_test(test_code_must_match_file_name),
	    cmocka_unit_test(test_duplicate_code_across_files),
	    cmocka_unit_test(test_calendar_rules),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
