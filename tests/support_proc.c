/* support_proc.c: programs under test as real processes (spawned with their
 * output captured in a file, waited for with a deadline), conditions awaited
 * in the database across its restarts, and logfmt lines read back. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include "db.h"
#include "support.h"

static void die(const char *what, const char *detail)
{
	fprintf(stderr, "test support: %s: %s\n", what, detail);
	abort();
}

long ts_ms_now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

void ts_sleep_ms(long ms)
{
	struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};

	while (nanosleep(&t, &t) < 0 && errno == EINTR)
		;
}

pid_t ts_spawn(const char *const argv[], const char *const env[], const char *err_path)
{
	pid_t pid = fork();

	if (pid < 0)
		die("fork", strerror(errno));
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);

		/* A program under test must not outlive a test that aborts. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (null >= 0) {
			dup2(null, STDIN_FILENO);
			dup2(null, STDOUT_FILENO);
		}
		if (err_path) {
			int fd = open(err_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
			if (fd < 0) {
				fprintf(stderr, "test support: %s: %s\n", err_path,
				        strerror(errno));
				_exit(127);
			}
			dup2(fd, STDERR_FILENO);
		}
		for (int i = 0; env && env[i]; i++)
			putenv((char *)env[i]);
		execv(argv[0], (char *const *)argv);
		fprintf(stderr, "test support: exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	return pid;
}

int ts_wait_pid(pid_t pid, long timeout_ms)
{
	long deadline = ts_ms_now() + timeout_ms;
	int status;

	for (;;) {
		pid_t r = waitpid(pid, &status, WNOHANG);
		if (r == pid)
			return status;
		if (r < 0 && errno != EINTR)
			die("waitpid", strerror(errno));
		if (ts_ms_now() >= deadline)
			return -1;
		ts_sleep_ms(10);
	}
}

void ts_kill_pid(pid_t pid)
{
	kill(pid, SIGKILL);
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
}

void ts_wait_log(const char *path, const char *what, long timeout_ms)
{
	long deadline = ts_ms_now() + timeout_ms;

	for (;;) {
		char *text = access(path, F_OK) == 0 ? ts_read_file(path) : NULL;
		int found = text && strstr(text, what) != NULL;

		free(text);
		if (found)
			return;
		if (ts_ms_now() >= deadline) {
			fprintf(stderr, "test support: no '%s' in %s after %ld ms\n", what, path,
			        timeout_ms);
			abort();
		}
		ts_sleep_ms(20);
	}
}

long ts_db_wait(const char *url, const char *sql, long want, long timeout_ms)
{
	long deadline = ts_ms_now() + timeout_ms, v = -1;
	PGconn *c = NULL;
	char err[512];

	for (;;) {
		/* A failed query (the server restarting) is retried, not fatal. */
		if (!c)
			c = db_connect(url, "tests", err, sizeof(err));
		if (c) {
			PGresult *r = db_query(c, sql, 0, NULL, err, sizeof(err));
			if (r) {
				v = PQntuples(r) ? (long)db_i64(r, 0, 0) : -1;
				PQclear(r);
			} else if (db_is_down(c)) {
				PQfinish(c);
				c = NULL;
			}
		}
		if (v == want || ts_ms_now() >= deadline)
			break;
		ts_sleep_ms(50);
	}
	PQfinish(c);
	return v;
}

char *ts_read_file(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf = NULL;
	size_t len = 0, cap = 0, n;

	if (!f)
		die(path, strerror(errno));
	do {
		if (len + 4096 + 1 > cap) {
			char *b;
			cap = cap ? cap * 2 : 65536;
			b = realloc(buf, cap);
			if (!b)
				die(path, "out of memory");
			buf = b;
		}
		n = fread(buf + len, 1, cap - len - 1, f);
		len += n;
	} while (n > 0);
	fclose(f);
	buf[len] = '\0';
	return buf;
}

/* Skips one logfmt value at p (quoted with \-escapes, or bare up to a
 * space), copying it unescaped into out when out is not NULL. */
static const char *logfmt_value(const char *p, char *out, size_t outlen)
{
	size_t n = 0;
	int quoted = *p == '"';

	if (quoted)
		p++;
	for (; *p && *p != '\n' && (quoted ? *p != '"' : *p != ' '); p++) {
		char c = *p;

		if (quoted && c == '\\' && p[1]) {
			p++;
			c = *p == 'n' ? '\n' : *p;
		}
		if (out && n + 1 < outlen)
			out[n++] = c;
	}
	if (out && outlen)
		out[n] = '\0';
	return quoted && *p == '"' ? p + 1 : p;
}

int ts_logfmt_get(const char *line, const char *key, char *out, size_t outlen)
{
	const char *p = line;
	size_t klen = strlen(key);

	while (*p && *p != '\n') {
		const char *k = p;
		const char *eq;

		while (*p && *p != '=' && *p != ' ' && *p != '\n')
			p++;
		if (*p != '=')
			return -1; /* not logfmt */
		eq = p++;
		if ((size_t)(eq - k) == klen && strncmp(k, key, klen) == 0) {
			logfmt_value(p, out, outlen);
			return 0;
		}
		p = logfmt_value(p, NULL, 0);
		while (*p == ' ')
			p++;
	}
	return -1;
}
