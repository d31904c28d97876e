/* calendar.h: billing periods, durations and timestamps in the process
 * timezone (TZ = billing.timezone). Times are int64 unix seconds. */
#ifndef CALENDAR_H
#define CALENDAR_H

#include <stddef.h>
#include <stdint.h>

enum cal_unit { CAL_DAY, CAL_WEEK, CAL_MONTH, CAL_YEAR };

/* "3d", "2w": local days (same wall-clock time k days later); "12h", "30m":
 * absolute hours and minutes. */
struct cal_duration {
	int amount;
	char unit; /* 'd' 'w' 'h' 'm' */
};

/* Start of period n (n >= 0) of a schedule anchored at anchor: computed from
 * the anchor, never by stepping from period n - 1. Months and years keep the
 * anchor's day and clamp at the month's end (Jan 31 -> Feb 28 -> Mar 31);
 * every period starts at the anchor's local time of day. */
int64_t cal_period_start(int64_t anchor, enum cal_unit unit, int count, int n);

/* t + d: for d and w the same local time d.amount days (weeks) later. */
int64_t cal_add(int64_t t, struct cal_duration d);

/* "1d", "3d", "2w", "12h", "30m" (amount 1..9999); 0 / -1. */
int cal_parse_duration(const char *s, struct cal_duration *d);
/* "3d" into buf. */
void cal_format_duration(struct cal_duration d, char *buf, size_t len);

/* ISO 8601 with offset ("2026-01-31T09:00:00-05:00", "2026-01-31T14:00:00Z",
 * seconds optional) or a date ("2026-01-31", local midnight); 0, or -1 with one
 * line naming the input in err. */
int cal_parse_time(const char *s, int64_t *t, char *err, size_t errlen);

/* Local ISO 8601 with offset: "2026-03-08T09:00:00-04:00". */
void cal_format(int64_t t, char *buf, size_t len);
/* Local date: "2026-03-08". */
void cal_format_date(int64_t t, char *buf, size_t len);

/* "day" "week" "month" "year"; 0 / -1. */
int cal_unit_parse(const char *s, enum cal_unit *u);
const char *cal_unit_name(enum cal_unit u);

#endif
