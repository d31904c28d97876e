/* calendar.c: billing periods, durations and timestamps in the process
 * timezone.
 *
 * Local calendar arithmetic is done on broken-down wall-clock fields and only
 * then turned into an instant, so that "same local time the next day" holds
 * across DST changes and month arithmetic never drifts. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "calendar.h"

static const char *const unit_names[] = {"day", "week", "month", "year"};

static int is_leap(long year)
{
	return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
}

static int days_in_month(long year, int mon /* 0..11 */)
{
	static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

	return mon == 1 && is_leap(year) ? 29 : days[mon];
}

static long utc_offset(int64_t t)
{
	time_t tt = (time_t)t;
	struct tm tm;

	localtime_r(&tt, &tm);
	return tm.tm_gmtoff;
}

/* The instant at which the local clock shows the wall-clock fields of w (which
 * need not be normalised: Feb 30 is Mar 2).
 *
 * Not mktime(tm_isdst = -1): for a time that occurs twice (fall back, 01:30 on
 * 2026-11-01 in Toronto) glibc's mktime returns either occurrence depending on
 * its previous call, and a period start must be the same every time it is
 * computed. Here the offsets in force a day before and a day after give the
 * candidates: a repeated time resolves to its first occurrence; a time that
 * does not exist (spring-forward gap, 02:30 on 2026-03-08) moves forward by the
 * gap's length (03:30), as mktime does. */
static int64_t local_to_instant(const struct tm *w)
{
	struct tm u = *w;
	int64_t wall = (int64_t)timegm(&u); /* the wall clock read as if it were UTC */
	long before = utc_offset(wall - 86400), after = utc_offset(wall + 86400);
	int64_t early = wall - (before > after ? before : after);
	int64_t late = wall - (before > after ? after : before);

	if (early + utc_offset(early) == wall)
		return early;
	return late;
}

static struct tm local_tm(int64_t t)
{
	time_t tt = (time_t)t;
	struct tm tm;

	localtime_r(&tt, &tm);
	return tm;
}

/* tm moved by k months, keeping its day clamped to the target month's end. */
static void add_months(struct tm *tm, long k)
{
	long months = (long)tm->tm_mon + k;
	long years = months >= 0 ? months / 12 : -((11 - months) / 12);
	int mon = (int)(months - years * 12);
	long year = 1900L + tm->tm_year + years;
	int last = days_in_month(year, mon);

	tm->tm_year = (int)(year - 1900);
	tm->tm_mon = mon;
	if (tm->tm_mday > last)
		tm->tm_mday = last;
}

int64_t cal_period_start(int64_t anchor, enum cal_unit unit, int count, int n)
{
	struct tm tm = local_tm(anchor);
	long k = (long)count * n;

	switch (unit) {
	case CAL_DAY:
		tm.tm_mday += (int)k;
		break;
	case CAL_WEEK:
		tm.tm_mday += (int)(7 * k);
		break;
	case CAL_MONTH:
		add_months(&tm, k);
		break;
	case CAL_YEAR:
		add_months(&tm, 12 * k);
		break;
	}
	return local_to_instant(&tm);
}

int64_t cal_add(int64_t t, struct cal_duration d)
{
	struct tm tm;

	switch (d.unit) {
	case 'h':
		return t + 3600 * (int64_t)d.amount;
	case 'm':
		return t + 60 * (int64_t)d.amount;
	case 'w':
		d.amount *= 7;
		break;
	}
	tm = local_tm(t);
	tm.tm_mday += d.amount;
	return local_to_instant(&tm);
}

int cal_parse_duration(const char *s, struct cal_duration *d)
{
	int amount = 0, digits = 0;

	for (; *s >= '0' && *s <= '9' && digits < 5; s++, digits++)
		amount = amount * 10 + (*s - '0');
	if (digits == 0 || digits > 4 || amount == 0 || !strchr("dwhm", *s) || !*s || s[1])
		return -1;
	d->amount = amount;
	d->unit = *s;
	return 0;
}

void cal_format_duration(struct cal_duration d, char *buf, size_t len)
{
	snprintf(buf, len, "%d%c", d.amount, d.unit);
}

/* n decimal digits at *s into *v, advancing *s; 0 / -1. */
static int digits(const char **s, int n, int *v)
{
	*v = 0;
	for (int i = 0; i < n; i++, (*s)++) {
		if (**s < '0' || **s > '9')
			return -1;
		*v = *v * 10 + (**s - '0');
	}
	return 0;
}

/* Expects the character c at *s, advancing past it; 0 / -1. */
static int expect(const char **s, char c)
{
	if (**s != c)
		return -1;
	(*s)++;
	return 0;
}

/* Parses s into wall-clock fields and, when it carries one, its UTC offset in
 * seconds (*has_offset). */
static int parse_iso(const char *s, struct tm *tm, int *has_offset, long *offset)
{
	int y, mo, d, h = 0, mi = 0, sec = 0, oh, om;

	memset(tm, 0, sizeof(*tm));
	*has_offset = 0;
	if (digits(&s, 4, &y) || expect(&s, '-') || digits(&s, 2, &mo) || expect(&s, '-') ||
	    digits(&s, 2, &d) || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo - 1))
		return -1;
	if (*s) {
		if (expect(&s, 'T') || digits(&s, 2, &h) || expect(&s, ':') || digits(&s, 2, &mi) ||
		    h > 23 || mi > 59)
			return -1;
		if (*s == ':' && (expect(&s, ':') || digits(&s, 2, &sec) || sec > 59))
			return -1;
		if (*s == 'Z') {
			s++;
			*offset = 0;
		} else if (*s == '+' || *s == '-') {
			int sign = *s++ == '-' ? -1 : 1;

			if (digits(&s, 2, &oh) || expect(&s, ':') || digits(&s, 2, &om) ||
			    oh > 23 || om > 59)
				return -1;
			*offset = sign * (oh * 3600L + om * 60L);
		} else {
			return -1; /* a time without offset is ambiguous */
		}
		if (*s)
			return -1;
		*has_offset = 1;
	}
	tm->tm_year = y - 1900;
	tm->tm_mon = mo - 1;
	tm->tm_mday = d;
	tm->tm_hour = h;
	tm->tm_min = mi;
	tm->tm_sec = sec;
	return 0;
}

int cal_parse_time(const char *s, int64_t *t, char *err, size_t errlen)
{
	struct tm tm;
	int has_offset;
	long offset = 0;

	if (parse_iso(s, &tm, &has_offset, &offset) < 0) {
		snprintf(err, errlen,
		         "invalid time '%s': expected ISO 8601 with offset "
		         "(2026-01-31T09:00:00-05:00, ...Z) or a date (2026-01-31)",
		         s);
		return -1;
	}
	*t = has_offset ? (int64_t)timegm(&tm) - offset : local_to_instant(&tm);
	return 0;
}

void cal_format(int64_t t, char *buf, size_t len)
{
	struct tm tm = local_tm(t);
	long off = tm.tm_gmtoff < 0 ? -tm.tm_gmtoff : tm.tm_gmtoff;

	snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d%c%02ld:%02ld", tm.tm_year + 1900,
	         tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
	         tm.tm_gmtoff < 0 ? '-' : '+', off / 3600, off % 3600 / 60);
}

void cal_format_date(int64_t t, char *buf, size_t len)
{
	struct tm tm = local_tm(t);

	snprintf(buf, len, "%04d-%02d-%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
}

int cal_unit_parse(const char *s, enum cal_unit *u)
{
	for (int i = CAL_DAY; i <= CAL_YEAR; i++) {
		if (strcmp(s, unit_names[i]) == 0) {
			*u = (enum cal_unit)i;
			return 0;
		}
	}
	return -1;
}

const char *cal_unit_name(enum cal_unit u)
{
	return u >= CAL_DAY && u <= CAL_YEAR ? unit_names[u] : "?";
}
