/* test_log.c: log lines (daemon/log.c) stay one logfmt line per event
 * whatever bytes a value holds: text from unauthenticated callers must not
 * end the line, drive the terminal or forge a key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "log.h"
#include "support.h"

/* The line log_event writes for one key "v" with value v (malloc'd). */
static char *line_for(const char *v)
{
	char path[] = "/tmp/test_log.XXXXXX";
	int fd = mkstemp(path);
	int saved = dup(STDERR_FILENO);
	char *text;

	assert_true(fd >= 0 && saved >= 0);
	assert_int_equal(dup2(fd, STDERR_FILENO), STDERR_FILENO);
	log_event("warn", "test", "v", v, "after", "1", (char *)NULL);
	assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
	close(saved);
	close(fd);
	text = ts_read_file(path);
	unlink(path);
	return text;
}

/* One line, ended by its only newline, with no control byte in it. */
static void assert_one_clean_line(const char *line)
{
	size_t n = strlen(line);

	assert_true(n > 0 && line[n - 1] == '\n');
	for (size_t i = 0; i + 1 < n; i++)
		assert_true((unsigned char)line[i] >= 0x20 && line[i] != 0x7f);
}

static void assert_value(const char *line, const char *want_raw, const char *want_parsed)
{
	char got[4096];

	assert_one_clean_line(line);
	assert_non_null(strstr(line, want_raw));
	assert_int_equal(ts_logfmt_get(line, "v", got, sizeof(got)), 0);
	if (want_parsed)
		assert_string_equal(got, want_parsed);
	assert_int_equal(ts_logfmt_get(line, "after", got, sizeof(got)), 0);
	assert_string_equal(got, "1");
}

static void test_line_breaks_escaped(void **state)
{
	char *l = line_for("a\rb\nc\td");

	(void)state;
	assert_value(l, " v=\"a\\rb\\nc\\td\" ", NULL);
	free(l);
}

static void test_control_bytes_escaped(void **state)
{
	char *l = line_for("\x1b[2J\x01z\x7f");

	(void)state;
	assert_value(l, " v=\"\\x1b[2J\\x01z\\x7f\" ", NULL);
	free(l);
}

static void test_quotes_cannot_forge_a_key(void **state)
{
	char got[64];
	char *l = line_for("x\" forged=\"1\\");

	(void)state;
	assert_value(l, " v=\"x\\\" forged=\\\"1\\\\\" ", "x\" forged=\"1\\");
	assert_int_equal(ts_logfmt_get(l, "forged", got, sizeof(got)), -1);
	free(l);
}

static void test_utf8_kept_invalid_bytes_escaped(void **state)
{
	/* "carte refusée" in UTF-8 stays; in Latin-1 (0xe9) and a raw or UTF-8
	 * encoded C1 CSI (0x9b, U+009B) are escaped. */
	char *ok = line_for("refus\xc3\xa9");
	char *bad = line_for("refus\xe9 \x9b\xc2\x9b\xed\xa0\x80");

	(void)state;
	assert_value(ok, " v=refus\xc3\xa9 ", "refus\xc3\xa9");
	assert_value(bad, " v=\"refus\\xe9 \\x9b\\xc2\\x9b\\xed\\xa0\\x80\" ", NULL);
	free(ok);
	free(bad);
}

static void test_plain_values_unquoted(void **state)
{
	char *l = line_for("abc-12.5:/x");
	char *e = line_for("");

	(void)state;
	assert_value(l, " v=abc-12.5:/x after=1\n", "abc-12.5:/x");
	assert_value(e, " v=\"\" after=1\n", "");
	free(l);
	free(e);
}

static void test_long_value_cut_between_escapes(void **state)
{
	char v[6001];
	char *l;
	size_t n;

	(void)state;
	memset(v, '\x1b', sizeof(v) - 1);
	v[sizeof(v) - 1] = '\0';
	l = line_for(v);
	n = strlen(l);
	assert_one_clean_line(l);
	assert_true(n >= 7);
	assert_string_equal(l + n - 6, "\\x1b\"\n");
	free(l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_line_breaks_escaped),
	    cmocka_unit_test(test_control_bytes_escaped),
	    cmocka_unit_test(test_quotes_cannot_forge_a_key),
	    cmocka_unit_test(test_utf8_kept_invalid_bytes_escaped),
	    cmocka_unit_test(test_plain_values_unquoted),
	    cmocka_unit_test(test_long_value_cut_between_escapes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
