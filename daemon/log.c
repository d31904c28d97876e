/* log.c: logfmt lines on stderr, one per event, written with one write(2)
 * so that lines from several threads never interleave. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static int quiet;

void log_set_quiet(int q)
{
	quiet = q;
}

static size_t put_value(char *buf, size_t len, size_t at, const char *v)
{
	int needs_quotes = v[0] == '\0' || strpbrk(v, " =\"\t\n\\") != NULL;

	if (needs_quotes && at < len)
		buf[at++] = '"';
	for (; *v && at + 2 < len; v++) {
		if (*v == '"' || *v == '\\') {
			buf[at++] = '\\';
			buf[at++] = *v;
		} else if (*v == '\n') {
			buf[at++] = '\\';
			buf[at++] = 'n';
		} else {
			buf[at++] = *v;
		}
	}
	if (needs_quotes && at < len)
		buf[at++] = '"';
	return at;
}

void log_event(const char *level, const char *event, ...)
{
	char buf[2048];
	struct timespec ts;
	struct tm tm;
	size_t at;
	va_list ap;
	const char *k;

	if (quiet && strcmp(level, "info") == 0)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	at = strftime(buf, sizeof(buf), "ts=%Y-%m-%dT%H:%M:%S", &tm);
	at += (size_t)snprintf(buf + at, sizeof(buf) - at, ".%03ldZ level=%s event=%s",
	                       ts.tv_nsec / 1000000, level, event);
	va_start(ap, event);
	while ((k = va_arg(ap, const char *)) != NULL && at + 4 < sizeof(buf)) {
		const char *v = va_arg(ap, const char *);
		at += (size_t)snprintf(buf + at, sizeof(buf) - at, " %s=", k);
		if (at >= sizeof(buf))
			break;
		at = put_value(buf, sizeof(buf) - 1, at, v ? v : "");
	}
	va_end(ap);
	if (at > sizeof(buf) - 2)
		at = sizeof(buf) - 2;
	buf[at++] = '\n';
	if (write(STDERR_FILENO, buf, at) < 0)
		return;
}
