/* test_billing_rules: how a subscription moves after an attempt's result
 * (billing_apply): advance, dunning steps counted from the failed attempt,
 * each on_exhausted, fixed cycles, "system busy", and an admin's pause or
 * cancel made while the charge was in flight; an admin's resume keeping
 * paid time (billing_resume) and a backdated start's first billed period
 * (billing_periods_passed). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "calendar.h"
#include "billing.h"
#include "plans.h"

static int64_t at(const char *iso)
{
	int64_t t;
	char err[128];

	if (cal_parse_time(iso, &t, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	return t;
}

static struct plan monthly(enum plan_exhausted on_exhausted, int cycles)
{
	struct plan p;

	memset(&p, 0, sizeof(p));
	snprintf(p.code, sizeof(p.code), "monthly");
	p.amount = 2900;
	p.interval = CAL_MONTH;
	p.interval_count = 1;
	p.cycles = cycles;
	p.nretry = 3;
	p.retry[0] = (struct cal_duration){1, 'd'};
	p.retry[1] = (struct cal_duration){3, 'd'};
	p.retry[2] = (struct cal_duration){7, 'd'};
	p.on_exhausted = on_exhausted;
	return p;
}

static struct billing_sub sub_at(int64_t anchor, int period)
{
	struct billing_sub ss;

	memset(&ss, 0, sizeof(ss));
	ss.anchor = anchor;
	ss.period = period;
	ss.cycles_done = period;
	ss.state = BILLING_ACTIVE;
	ss.next_charge_at = 1;
	return ss;
}

static int setup(void **state)
{
	(void)state;
	setenv("TZ", "America/Toronto", 1);
	tzset();
	return 0;
}

static void test_success_advances_from_the_anchor(void **state)
{
	struct plan p = monthly(PLAN_PAST_DUE, 0);
	struct billing_sub ss = sub_at(at("2026-01-31T10:00:00-05:00"), 1);

	(void)state;
	ss.attempts = 2;
	ss.state = BILLING_PAST_DUE;
	billing_apply(&p, &ss, BILLING_SUCCEEDED, at("2026-03-05T12:00:00-05:00"));
	assert_string_equal(billing_state_names[ss.state], "active");
	assert_int_equal(ss.period, 2);
	assert_int_equal(ss.attempts, 0);
	assert_int_equal(ss.period_start, at("2026-02-28T10:00:00-05:00"));
	/* clamped in February, back to the 31st in March, DST-safe local time */
	assert_int_equal(ss.period_end, at("2026-03-31T10:00:00-04:00"));
	assert_int_equal(ss.next_charge_at, ss.period_end);
}

static void test_declines_step_from_the_failed_attempt(void **state)
{
	struct plan p = monthly(PLAN_PAST_DUE, 0);
	struct billing_sub ss = sub_at(at("2026-03-01T09:00:00-05:00"), 0);
	int64_t t1 = at("2026-03-07T09:30:00-05:00");

	(void)state;
	billing_apply(&p, &ss, BILLING_DECLINED, t1);
	assert_string_equal(billing_state_names[ss.state], "past_due");
	assert_int_equal(ss.attempts, 1);
	assert_int_equal(ss.next_charge_at, at("2026-03-08T09:30:00-04:00")); /* 1d, across DST */
	billing_apply(&p, &ss, BILLING_DECLINED, at("2026-03-08T11:00:00-04:00"));
	assert_int_equal(ss.next_charge_at, at("2026-03-11T11:00:00-04:00")); /* 3d */
	billing_apply(&p, &ss, BILLING_DECLINED, at("2026-03-11T11:00:00-04:00"));
	assert_int_equal(ss.next_charge_at, at("2026-03-18T11:00:00-04:00")); /* 7d */
	assert_int_equal(ss.period, 0);
}

static void test_exhausted(void **state)
{
	static const struct {
		enum plan_exhausted e;
		const char *state;
	} cases[] = {
	    {PLAN_PAST_DUE, "past_due"}, {PLAN_CANCEL, "canceled"}, {PLAN_PAUSE, "paused"}};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct plan p = monthly(cases[i].e, 0);
		struct billing_sub ss = sub_at(at("2026-03-01T09:00:00-05:00"), 0);
		for (int k = 0; k < 4; k++)
			billing_apply(&p, &ss, BILLING_DECLINED, at("2026-03-02T09:00:00-05:00"));
		assert_string_equal(billing_state_names[ss.state], cases[i].state);
		assert_int_equal(ss.attempts, 4);
		assert_int_equal(ss.next_charge_at, 0);
		assert_int_equal(ss.period, 0);
	}
}

static void test_fixed_cycles_end(void **state)
{
	struct plan p = monthly(PLAN_PAST_DUE, 3);
	struct billing_sub ss = sub_at(at("2026-01-15T00:00:00-05:00"), 2);

	(void)state;
	billing_apply(&p, &ss, BILLING_SUCCEEDED, at("2026-03-15T00:00:00-04:00"));
	assert_string_equal(billing_state_names[ss.state], "ended");
	assert_int_equal(ss.cycles_done, 3);
	assert_int_equal(ss.next_charge_at, 0);
}

static void test_busy_absent_unknown(void **state)
{
	struct plan p = monthly(PLAN_PAST_DUE, 0);
	struct billing_sub ss = sub_at(at("2026-03-01T09:00:00-05:00"), 0), before;
	int64_t now = at("2026-03-01T09:00:00-05:00");

	(void)state;
	billing_apply(&p, &ss, BILLING_BUSY, now);
	assert_int_equal(ss.attempts, 0); /* the gateway's trouble is not a decline */
	assert_true(ss.next_charge_at > now && ss.next_charge_at <= now + 300);
	before = ss;
	billing_apply(&p, &ss, BILLING_ABSENT, now);
	billing_apply(&p, &ss, BILLING_UNKNOWN, now);
	assert_memory_equal(&ss, &before, sizeof(ss));
}

static void test_admin_pause_or_cancel_stands(void **state)
{
	static const char *const halted[] = {"paused", "canceled"};
	struct plan p = monthly(PLAN_PAST_DUE, 0);

	(void)state;
	for (size_t i = 0; i < 2; i++) {
		struct billing_sub ss = sub_at(at("2026-03-01T09:00:00-05:00"), 0);
		ss.state = (enum billing_state)billing_state_parse(halted[i]);
		billing_apply(&p, &ss, BILLING_SUCCEEDED, at("2026-03-01T09:00:00-05:00"));
		assert_string_equal(billing_state_names[ss.state], halted[i]);
		assert_int_equal(ss.period, 1); /* the paid period is recorded */
		assert_int_equal(ss.next_charge_at, 0);
	}
}

/* Resume keeps paid time: before the paid period's end nothing is due until
 * it; after it a new period starts at the resume (paused time never billed);
 * a paused trial keeps its remaining time; a subscription paused by the
 * dunning rules (no paused_at) starts again at the resume. */
static void test_resume_keeps_paid_time(void **state)
{
	int64_t paid_end = at("2027-01-10T09:00:00-05:00"), te;
	struct billing_sub ss = sub_at(at("2026-01-10T09:00:00-05:00"), 1);

	(void)state;
	ss.period_start = at("2026-01-10T09:00:00-05:00");
	ss.period_end = paid_end;
	ss.state = BILLING_PAUSED;
	ss.next_charge_at = 0;
	te = 0;
	billing_resume(&ss, &te, at("2026-03-01T12:00:00-05:00"), at("2026-06-01T12:00:00-04:00"));
	assert_string_equal(billing_state_names[ss.state], "active");
	assert_int_equal(ss.next_charge_at, paid_end);
	assert_int_equal(ss.anchor, at("2026-01-10T09:00:00-05:00")); /* calendar kept */

	ss.state = BILLING_PAUSED;
	ss.attempts = 2;
	billing_resume(&ss, &te, at("2026-11-01T12:00:00-04:00"), at("2027-03-01T10:00:00-05:00"));
	assert_string_equal(billing_state_names[ss.state], "active");
	assert_int_equal(ss.next_charge_at, at("2027-03-01T10:00:00-05:00"));
	assert_int_equal(ss.anchor, at("2027-03-01T10:00:00-05:00"));
	assert_int_equal(ss.anchor_period, ss.period); /* the next period starts there */
	assert_int_equal(ss.attempts, 0);
}

static void test_resume_of_a_trial_keeps_its_days(void **state)
{
	int64_t te = at("2026-01-15T00:00:00-05:00");
	struct billing_sub ss = sub_at(te, 0);

	(void)state;
	ss.state = BILLING_PAUSED;
	ss.next_charge_at = 0;
	billing_resume(&ss, &te, at("2026-01-05T00:00:00-05:00"), at("2026-02-01T00:00:00-05:00"));
	assert_string_equal(billing_state_names[ss.state], "trialing");
	assert_int_equal(te, at("2026-02-11T00:00:00-05:00"));
	assert_int_equal(ss.next_charge_at, te);
	assert_int_equal(ss.anchor, te);

	/* Paused by the dunning rules (no admin's pause): a new period now. */
	te = at("2026-01-15T00:00:00-05:00");
	ss = sub_at(te, 0);
	ss.state = BILLING_PAUSED;
	billing_resume(&ss, &te, 0, at("2026-01-10T00:00:00-05:00"));
	assert_string_equal(billing_state_names[ss.state], "active");
	assert_int_equal(ss.next_charge_at, at("2026-01-10T00:00:00-05:00"));
}

/* A backdated start: the period that contains now, capped by the cycles. */
static void test_periods_passed(void **state)
{
	struct plan p = monthly(PLAN_PAST_DUE, 0);
	int64_t anchor = at("2026-01-31T09:00:00-05:00");

	(void)state;
	assert_int_equal(billing_periods_passed(&p, anchor, at("2026-01-01T00:00:00-05:00")), 0);
	assert_int_equal(billing_periods_passed(&p, anchor, anchor), 0);
	assert_int_equal(billing_periods_passed(&p, anchor, at("2026-02-28T08:59:59-05:00")), 0);
	assert_int_equal(billing_periods_passed(&p, anchor, at("2026-02-28T09:00:00-05:00")), 1);
	assert_int_equal(billing_periods_passed(&p, anchor, at("2026-05-01T00:00:00-04:00")), 3);
	p.cycles = 2;
	assert_int_equal(billing_periods_passed(&p, anchor, at("2026-05-01T00:00:00-04:00")), 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_success_advances_from_the_anchor),
	    cmocka_unit_test(test_declines_step_from_the_failed_attempt),
	    cmocka_unit_test(test_exhausted),
	    cmocka_unit_test(test_fixed_cycles_end),
	    cmocka_unit_test(test_busy_absent_unknown),
	    cmocka_unit_test(test_admin_pause_or_cancel_stands),
	    cmocka_unit_test(test_resume_keeps_paid_time),
	    cmocka_unit_test(test_resume_of_a_trial_keeps_its_days),
	    cmocka_unit_test(test_periods_passed),
	};
	return cmocka_run_group_tests(tests, setup, NULL);
}
