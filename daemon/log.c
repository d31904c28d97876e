/* log.c: logfmt lines on stderr, one per event, written with one write(2)
 * so that lines from several threads never interleave. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "utf8.h"

static int quiet;

void log_set_quiet(int q)
{
	quiet = q;
}

/* One unit of the value at v, as written: an escape for quotes, backslashes,
 * control bytes and bytes that are not valid UTF-8 (text from callers on the
 * network must not end a line, move the cursor or forge a key), else the
 * byte or the whole UTF-8 character. Returns the bytes of v consumed. */
static size_t unit(const unsigned char *v, char out[5], size_t *outlen)
{
	static const char hex[] = "0123456789abcdef";
	size_t n = (size_t)utf8_len(v);

	/* C1 controls (U+0080..U+009F): some terminals obey them as they do ESC */
	if (n == 2 && v[0] == 0xc2 && v[1] < 0xa0)
		n = 0;

	if (*v == '"' || *v == '\\' || *v == '\n' || *v == '\r' || *v == '\t') {
		out[0] = '\\';
		out[1] = *v == '\n' ? 'n' : *v == '\r' ? 'r' : *v == '\t' ? 't' : (char)*v;
		*outlen = 2;
		return 1;
	}
	if (*v < 0x20 || *v == 0x7f || n == 0) {
		out[0] = '\\';
		out[1] = 'x';
		out[2] = hex[*v >> 4];
		out[3] = hex[*v & 15];
		*outlen = 4;
		return 1;
	}
	memcpy(out, v, n);
	*outlen = n;
	return n;
}

void log_escape(char *dst, size_t n, const char *src)
{
	const unsigned char *u = (const unsigned char *)src;
	size_t at = 0, len;
	char out[5];

	while (*u) {
		size_t used = unit(u, out, &len);

		if (at + len + 1 > n)
			break;
		memcpy(dst + at, out, len);
		at += len;
		u += used;
	}
	if (n)
		dst[at] = '\0';
}

/* Writes v into buf[at..len) as a logfmt value, quoted when it is empty or
 * holds a space, '=' or anything escaped; a value that does not fit is cut
 * between units, never inside an escape, and keeps its closing quote. */
static size_t put_value(char *buf, size_t len, size_t at, const char *v)
{
	const unsigned char *u = (const unsigned char *)v;
	int quoted = !*u;
	char out[5];
	size_t n;

	for (const unsigned char *p = u; *p && !quoted;) {
		quoted = *p == ' ' || *p == '=';
		p += unit(p, out, &n);
		quoted |= out[0] == '\\';
	}
	if (quoted && at + 2 > len)
		return at;
	if (quoted)
		buf[at++] = '"';
	while (*u) {
		size_t used = unit(u, out, &n);

		if (at + n + (size_t)quoted > len)
			break;
		memcpy(buf + at, out, n);
		at += n;
		u += used;
	}
	if (quoted)
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
