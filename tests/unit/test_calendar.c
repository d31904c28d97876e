/* test_calendar.c: billing periods, durations and timestamps in
 * America/Toronto. The expected dates are written out literally (computed
 * independently, not with the code under test). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "calendar.h"

struct row {
	int n;
	const char *start; /* local ISO 8601 with offset */
};

/* "2026-03-08T09:00:00-04:00" -> unix seconds, without the calendar module. */
static int64_t instant(const char *iso)
{
	struct tm tm = {0};
	int y, mo, d, h, mi, s, oh, om;
	char sign;

	assert_int_equal(sscanf(iso, "%4d-%2d-%2dT%2d:%2d:%2d%c%2d:%2d", &y, &mo, &d, &h, &mi, &s,
	                        &sign, &oh, &om),
	                 9);
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = s;
	return (int64_t)timegm(&tm) - (sign == '-' ? -1 : 1) * (oh * 3600 + om * 60);
}

/* Every row: the instant and its local rendering (wall clock and offset). */
static void check_rows(const char *anchor, enum cal_unit unit, int count, const struct row *rows,
                       size_t nrows)
{
	char buf[64];

	for (size_t i = 0; i < nrows; i++) {
		int64_t t = cal_period_start(instant(anchor), unit, count, rows[i].n);

		cal_format(t, buf, sizeof(buf));
		if (strcmp(buf, rows[i].start) != 0 || t != instant(rows[i].start))
			fail_msg("%s every %d %s, period %d: got %s, expected %s", anchor, count,
			         cal_unit_name(unit), rows[i].n, buf, rows[i].start);
	}
}

#define CHECK(anchor, unit, count, rows)                                                           \
	check_rows(anchor, unit, count, rows, sizeof(rows) / sizeof(rows[0]))

static const struct row monthly_31[] = {
    {0, "2026-01-31T10:00:00-05:00"},  {1, "2026-02-28T10:00:00-05:00"},
    {2, "2026-03-31T10:00:00-04:00"},  {3, "2026-04-30T10:00:00-04:00"},
    {4, "2026-05-31T10:00:00-04:00"},  {5, "2026-06-30T10:00:00-04:00"},
    {6, "2026-07-31T10:00:00-04:00"},  {7, "2026-08-31T10:00:00-04:00"},
    {8, "2026-09-30T10:00:00-04:00"},  {9, "2026-10-31T10:00:00-04:00"},
    {10, "2026-11-30T10:00:00-05:00"}, {11, "2026-12-31T10:00:00-05:00"},
    {12, "2027-01-31T10:00:00-05:00"}, {13, "2027-02-28T10:00:00-05:00"},
    {14, "2027-03-31T10:00:00-04:00"}, {15, "2027-04-30T10:00:00-04:00"},
    {16, "2027-05-31T10:00:00-04:00"}, {17, "2027-06-30T10:00:00-04:00"},
    {18, "2027-07-31T10:00:00-04:00"}, {19, "2027-08-31T10:00:00-04:00"},
    {20, "2027-09-30T10:00:00-04:00"}, {21, "2027-10-31T10:00:00-04:00"},
    {22, "2027-11-30T10:00:00-05:00"}, {23, "2027-12-31T10:00:00-05:00"},
    {24, "2028-01-31T10:00:00-05:00"}, {25, "2028-02-29T10:00:00-05:00"},
    {26, "2028-03-31T10:00:00-04:00"}, {27, "2028-04-30T10:00:00-04:00"},
    {28, "2028-05-31T10:00:00-04:00"}, {29, "2028-06-30T10:00:00-04:00"},
    {30, "2028-07-31T10:00:00-04:00"}, {31, "2028-08-31T10:00:00-04:00"},
    {32, "2028-09-30T10:00:00-04:00"}, {33, "2028-10-31T10:00:00-04:00"},
    {34, "2028-11-30T10:00:00-05:00"}, {35, "2028-12-31T10:00:00-05:00"},
    {36, "2029-01-31T10:00:00-05:00"}, {37, "2029-02-28T10:00:00-05:00"},
    {38, "2029-03-31T10:00:00-04:00"}, {39, "2029-04-30T10:00:00-04:00"},
    {40, "2029-05-31T10:00:00-04:00"}, {41, "2029-06-30T10:00:00-04:00"},
    {42, "2029-07-31T10:00:00-04:00"}, {43, "2029-08-31T10:00:00-04:00"},
    {44, "2029-09-30T10:00:00-04:00"}, {45, "2029-10-31T10:00:00-04:00"},
    {46, "2029-11-30T10:00:00-05:00"}, {47, "2029-12-31T10:00:00-05:00"},
    {48, "2030-01-31T10:00:00-05:00"}, {49, "2030-02-28T10:00:00-05:00"},
    {50, "2030-03-31T10:00:00-04:00"}, {51, "2030-04-30T10:00:00-04:00"},
    {52, "2030-05-31T10:00:00-04:00"}, {53, "2030-06-30T10:00:00-04:00"},
    {54, "2030-07-31T10:00:00-04:00"}, {55, "2030-08-31T10:00:00-04:00"},
    {56, "2030-09-30T10:00:00-04:00"}, {57, "2030-10-31T10:00:00-04:00"},
    {58, "2030-11-30T10:00:00-05:00"}, {59, "2030-12-31T10:00:00-05:00"},
    {60, "2031-01-31T10:00:00-05:00"},
};
static const struct row monthly_30[] = {
    {0, "2028-01-30T08:15:00-05:00"},  {1, "2028-02-29T08:15:00-05:00"},
    {2, "2028-03-30T08:15:00-04:00"},  {3, "2028-04-30T08:15:00-04:00"},
    {4, "2028-05-30T08:15:00-04:00"},  {5, "2028-06-30T08:15:00-04:00"},
    {6, "2028-07-30T08:15:00-04:00"},  {7, "2028-08-30T08:15:00-04:00"},
    {8, "2028-09-30T08:15:00-04:00"},  {9, "2028-10-30T08:15:00-04:00"},
    {10, "2028-11-30T08:15:00-05:00"}, {11, "2028-12-30T08:15:00-05:00"},
    {12, "2029-01-30T08:15:00-05:00"}, {13, "2029-02-28T08:15:00-05:00"},
};
static const struct row quarterly_30[] = {
    {0, "2027-11-30T00:00:00-05:00"},  {1, "2028-02-29T00:00:00-05:00"},
    {2, "2028-05-30T00:00:00-04:00"},  {3, "2028-08-30T00:00:00-04:00"},
    {4, "2028-11-30T00:00:00-05:00"},  {5, "2029-02-28T00:00:00-05:00"},
    {6, "2029-05-30T00:00:00-04:00"},  {7, "2029-08-30T00:00:00-04:00"},
    {8, "2029-11-30T00:00:00-05:00"},  {9, "2030-02-28T00:00:00-05:00"},
    {10, "2030-05-30T00:00:00-04:00"}, {11, "2030-08-30T00:00:00-04:00"},
    {12, "2030-11-30T00:00:00-05:00"}, {13, "2031-02-28T00:00:00-05:00"},
    {14, "2031-05-30T00:00:00-04:00"}, {15, "2031-08-30T00:00:00-04:00"},
    {16, "2031-11-30T00:00:00-05:00"}, {17, "2032-02-29T00:00:00-05:00"},
    {18, "2032-05-30T00:00:00-04:00"}, {19, "2032-08-30T00:00:00-04:00"},
    {20, "2032-11-30T00:00:00-05:00"},
};
static const struct row yearly_feb29[] = {
    {0, "2028-02-29T12:00:00-05:00"}, {1, "2029-02-28T12:00:00-05:00"},
    {2, "2030-02-28T12:00:00-05:00"}, {3, "2031-02-28T12:00:00-05:00"},
    {4, "2032-02-29T12:00:00-05:00"}, {5, "2033-02-28T12:00:00-05:00"},
    {6, "2034-02-28T12:00:00-05:00"}, {7, "2035-02-28T12:00:00-05:00"},
    {8, "2036-02-29T12:00:00-05:00"}, {9, "2037-02-28T12:00:00-05:00"},
};
static const struct row biennial[] = {
    {0, "2026-08-31T09:00:00-04:00"}, {1, "2028-08-31T09:00:00-04:00"},
    {2, "2030-08-31T09:00:00-04:00"}, {3, "2032-08-31T09:00:00-04:00"},
    {4, "2034-08-31T09:00:00-04:00"}, {5, "2036-08-31T09:00:00-04:00"},
};
static const struct row daily[] = {
    {0, "2026-01-15T09:00:00-05:00"},    {1, "2026-01-16T09:00:00-05:00"},
    {51, "2026-03-07T09:00:00-05:00"},   {52, "2026-03-08T09:00:00-04:00"},
    {53, "2026-03-09T09:00:00-04:00"},   {289, "2026-10-31T09:00:00-04:00"},
    {290, "2026-11-01T09:00:00-05:00"},  {291, "2026-11-02T09:00:00-05:00"},
    {423, "2027-03-14T09:00:00-04:00"},  {661, "2027-11-07T09:00:00-05:00"},
    {775, "2028-02-29T09:00:00-05:00"},  {776, "2028-03-01T09:00:00-05:00"},
    {1446, "2029-12-31T09:00:00-05:00"}, {1447, "2030-01-01T09:00:00-05:00"},
    {1826, "2031-01-15T09:00:00-05:00"},
};
static const struct row weekly[] = {
    {0, "2026-01-05T09:00:00-05:00"},   {1, "2026-01-12T09:00:00-05:00"},
    {8, "2026-03-02T09:00:00-05:00"},   {9, "2026-03-09T09:00:00-04:00"},
    {42, "2026-10-26T09:00:00-04:00"},  {43, "2026-11-02T09:00:00-05:00"},
    {52, "2027-01-04T09:00:00-05:00"},  {112, "2028-02-28T09:00:00-05:00"},
    {113, "2028-03-06T09:00:00-05:00"}, {260, "2030-12-30T09:00:00-05:00"},
    {261, "2031-01-06T09:00:00-05:00"},
};
static const struct row biweekly[] = {
    {0, "2026-02-27T18:45:00-05:00"},   {1, "2026-03-13T18:45:00-04:00"},
    {17, "2026-10-23T18:45:00-04:00"},  {18, "2026-11-06T18:45:00-05:00"},
    {129, "2031-02-07T18:45:00-05:00"},
};
static const struct row every_3_days[] = {
    {0, "2026-03-05T07:00:00-05:00"},   {1, "2026-03-08T07:00:00-04:00"},
    {2, "2026-03-11T07:00:00-04:00"},   {79, "2026-10-28T07:00:00-04:00"},
    {80, "2026-10-31T07:00:00-04:00"},  {81, "2026-11-03T07:00:00-05:00"},
    {608, "2031-03-03T07:00:00-05:00"},
};
static const struct row gap[] = {
    {0, "2026-03-07T02:30:00-05:00"},
    {1, "2026-03-08T03:30:00-04:00"},
    {2, "2026-03-09T02:30:00-04:00"},
};
static const struct row overlap[] = {
    {0, "2026-10-31T01:30:00-04:00"},
    {1, "2026-11-01T01:30:00-04:00"},
    {2, "2026-11-02T01:30:00-05:00"},
};

static void test_monthly_month_end(void **state)
{
	(void)state;
	CHECK("2026-01-31T10:00:00-05:00", CAL_MONTH, 1, monthly_31);
	CHECK("2028-01-30T08:15:00-05:00", CAL_MONTH, 1, monthly_30);
}

static void test_quarterly(void **state)
{
	(void)state;
	CHECK("2027-11-30T00:00:00-05:00", CAL_MONTH, 3, quarterly_30);
}

static void test_yearly_leap_day(void **state)
{
	(void)state;
	CHECK("2028-02-29T12:00:00-05:00", CAL_YEAR, 1, yearly_feb29);
	CHECK("2026-08-31T09:00:00-04:00", CAL_YEAR, 2, biennial);
}

static void test_daily_and_weekly_across_dst(void **state)
{
	(void)state;
	CHECK("2026-01-15T09:00:00-05:00", CAL_DAY, 1, daily);
	CHECK("2026-03-05T07:00:00-05:00", CAL_DAY, 3, every_3_days);
	CHECK("2026-01-05T09:00:00-05:00", CAL_WEEK, 1, weekly);
	CHECK("2026-02-27T18:45:00-05:00", CAL_WEEK, 2, biweekly);
}

/* The UTC instant of 09:00 local moves by an hour at each transition: the day
 * of spring forward is 23 hours long, the day of fall back 25. */
static void test_daily_utc_shift(void **state)
{
	int64_t a = instant("2026-03-07T09:00:00-05:00");
	int64_t b = instant("2026-10-31T09:00:00-04:00");

	(void)state;
	assert_int_equal(cal_period_start(a, CAL_DAY, 1, 1) - a, 23 * 3600);
	assert_int_equal(cal_period_start(b, CAL_DAY, 1, 1) - b, 25 * 3600);
}

/* Every period of five years: 09:00 local, exactly n local days (weeks) after
 * the anchor's date (the date counted in civil days, not via the local zone). */
static void check_every_period(const char *anchor, enum cal_unit unit, int days_per, int periods)
{
	struct tm want, got;
	time_t civil = (time_t)instant(anchor) / 86400 * 86400; /* anchor date at 00:00 UTC */

	for (int n = 0; n <= periods; n++) {
		time_t t = (time_t)cal_period_start(instant(anchor), unit, 1, n);
		time_t day = civil + (time_t)n * days_per * 86400;

		gmtime_r(&day, &want);
		localtime_r(&t, &got);
		if (got.tm_year != want.tm_year || got.tm_yday != want.tm_yday ||
		    got.tm_hour != 9 || got.tm_min != 0 || got.tm_sec != 0)
			fail_msg("%s period %d: %04d-%02d-%02d %02d:%02d:%02d", anchor, n,
			         got.tm_year + 1900, got.tm_mon + 1, got.tm_mday, got.tm_hour,
			         got.tm_min, got.tm_sec);
	}
}

static void test_five_years_of_days_and_weeks(void **state)
{
	(void)state;
	check_every_period("2026-01-15T09:00:00-05:00", CAL_DAY, 1, 5 * 365 + 1);
	check_every_period("2026-01-05T09:00:00-05:00", CAL_WEEK, 7, 5 * 53);
}

/* 02:30 does not exist on 2026-03-08 (moved forward to 03:30); 01:30 occurs
 * twice on 2026-11-01 (the first occurrence, whatever was computed before). */
static void test_gap_and_overlap(void **state)
{
	int64_t a = instant("2026-10-31T01:30:00-04:00");

	(void)state;
	CHECK("2026-03-07T02:30:00-05:00", CAL_DAY, 1, gap);
	CHECK("2026-10-31T01:30:00-04:00", CAL_DAY, 1, overlap);
	cal_period_start(a, CAL_DAY, 1, 2);
	assert_int_equal(cal_period_start(a, CAL_DAY, 1, 1), instant("2026-11-01T01:30:00-04:00"));
}

/* A 14-day trial moves the first paid period to 09:00 local 14 days later,
 * across the spring transition; the monthly periods count from there. */
static void test_trial_shifts_first_period(void **state)
{
	struct cal_duration trial = {14, 'd'};
	int64_t anchor = cal_add(instant("2026-02-28T09:00:00-05:00"), trial);

	(void)state;
	assert_int_equal(anchor, instant("2026-03-14T09:00:00-04:00"));
	assert_int_equal(cal_period_start(anchor, CAL_MONTH, 1, 1),
	                 instant("2026-04-14T09:00:00-04:00"));
	assert_int_equal(cal_period_start(anchor, CAL_MONTH, 1, 8),
	                 instant("2026-11-14T09:00:00-05:00"));
}

static void test_add(void **state)
{
	static const struct {
		const char *from;
		struct cal_duration d;
		const char *to;
	} rows[] = {
	    {"2026-03-07T09:00:00-05:00", {1, 'd'}, "2026-03-08T09:00:00-04:00"},
	    {"2026-10-31T09:00:00-04:00", {1, 'd'}, "2026-11-01T09:00:00-05:00"},
	    {"2026-03-07T02:30:00-05:00", {1, 'd'}, "2026-03-08T03:30:00-04:00"},
	    {"2026-03-02T09:00:00-05:00", {1, 'w'}, "2026-03-09T09:00:00-04:00"},
	    {"2026-02-27T23:00:00-05:00", {3, 'd'}, "2026-03-02T23:00:00-05:00"},
	    {"2028-02-27T23:00:00-05:00", {3, 'd'}, "2028-03-01T23:00:00-05:00"},
	    {"2026-03-08T01:00:00-05:00", {2, 'h'}, "2026-03-08T04:00:00-04:00"},
	    {"2026-11-01T01:00:00-04:00", {2, 'h'}, "2026-11-01T02:00:00-05:00"},
	    {"2026-01-31T23:45:00-05:00", {30, 'm'}, "2026-02-01T00:15:00-05:00"},
	};
	char buf[64];

	(void)state;
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		cal_format(cal_add(instant(rows[i].from), rows[i].d), buf, sizeof(buf));
		assert_string_equal(buf, rows[i].to);
	}
}

static void test_parse_time(void **state)
{
	static const struct {
		const char *in;
		int64_t t;
	} ok[] = {
	    {"2026-01-31T09:00:00-05:00", 1769868000},
	    {"2026-01-31T14:00:00Z", 1769868000},
	    {"2026-01-31T09:00-05:00", 1769868000},
	    {"2026-01-31T19:30:00+05:30", 1769868000},
	    {"2026-01-31", 1769835600}, /* local midnight, EST */
	    {"2026-07-01", 1782878400}, /* local midnight, EDT */
	    {"2028-02-29", 1835413200},
	};
	static const char *const bad[] = {
	    "",
	    "tomorrow",
	    "2026-02-30",
	    "2027-02-29",
	    "2026-13-01",
	    "26-01-31",
	    "2026-1-31",
	    "2026-01-31T09:00:00",
	    "2026-01-31 09:00:00-05:00",
	    "2026-01-31T24:00:00Z",
	    "2026-01-31T09:60:00Z",
	    "2026-01-31T09:00:00-0500",
	    "2026-01-31T09:00:00Zjunk",
	    "2026-01-31T09:00:00.5Z",
	    "2026-01-31x",
	};
	char err[256];
	int64_t t;

	(void)state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		t = 0;
		if (cal_parse_time(ok[i].in, &t, err, sizeof(err)) < 0 || t != ok[i].t)
			fail_msg("'%s': got %lld", ok[i].in, (long long)t);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		if (cal_parse_time(bad[i], &t, err, sizeof(err)) != -1)
			fail_msg("'%s' accepted", bad[i]);
		assert_non_null(strstr(err, bad[i]));
		assert_null(strchr(err, '\n'));
	}
}

static void test_format(void **state)
{
	char buf[64];

	(void)state;
	cal_format(1769868000, buf, sizeof(buf));
	assert_string_equal(buf, "2026-01-31T09:00:00-05:00");
	cal_format(1782878400, buf, sizeof(buf));
	assert_string_equal(buf, "2026-07-01T00:00:00-04:00");
	cal_format_date(1782878400 - 1, buf, sizeof(buf));
	assert_string_equal(buf, "2026-06-30");
	cal_format_date(1769868000, buf, sizeof(buf));
	assert_string_equal(buf, "2026-01-31");
}

static void test_durations_and_units(void **state)
{
	static const char *const good[] = {"1d", "3d", "7d", "2w", "12h", "30m", "9999d"};
	static const char *const bad[] = {"",       "d",   "0d",   "-1d", "1x", "1dd",
	                                  "10000d", "1 d", "1.5d", "1D",  "d1", " 1d"};
	struct cal_duration d;
	enum cal_unit u;
	char buf[16];

	(void)state;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		assert_int_equal(cal_parse_duration(good[i], &d), 0);
		cal_format_duration(d, buf, sizeof(buf));
		assert_string_equal(buf, good[i]);
	}
	assert_int_equal(cal_parse_duration("12h", &d), 0);
	assert_int_equal(d.amount, 12);
	assert_int_equal(d.unit, 'h');
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (cal_parse_duration(bad[i], &d) != -1)
			fail_msg("duration '%s' accepted", bad[i]);

	assert_int_equal(cal_unit_parse("week", &u), 0);
	assert_int_equal(u, CAL_WEEK);
	assert_int_equal(cal_unit_parse("year", &u), 0);
	assert_int_equal(u, CAL_YEAR);
	assert_int_equal(cal_unit_parse("fortnight", &u), -1);
	assert_int_equal(cal_unit_parse("Month", &u), -1);
	assert_string_equal(cal_unit_name(CAL_MONTH), "month");
	assert_string_equal(cal_unit_name(CAL_DAY), "day");
}

static int set_tz(void **state)
{
	(void)state;
	setenv("TZ", "America/Toronto", 1);
	tzset();
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_monthly_month_end),
	    cmocka_unit_test(test_quarterly),
	    cmocka_unit_test(test_yearly_leap_day),
	    cmocka_unit_test(test_daily_and_weekly_across_dst),
	    cmocka_unit_test(test_daily_utc_shift),
	    cmocka_unit_test(test_five_years_of_days_and_weeks),
	    cmocka_unit_test(test_gap_and_overlap),
	    cmocka_unit_test(test_trial_shifts_first_period),
	    cmocka_unit_test(test_add),
	    cmocka_unit_test(test_parse_time),
	    cmocka_unit_test(test_format),
	    cmocka_unit_test(test_durations_and_units),
	};

	return cmocka_run_group_tests(tests, set_tz, NULL);
}
