/* test_notify: billingd's systemd readiness protocol, seen from a fake
 * systemd: a unix datagram socket named by NOTIFY_SOCKET. READY=1 comes only
 * once the listener answers, STATUS= carries the last pass's figures,
 * WATCHDOG=1 comes with every turn of the main loop, SIGHUP is RELOADING=1
 * then READY=1, SIGTERM STOPPING=1; a daemon that cannot start (old schema)
 * never says READY=1. */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "db.h"
#include "support.h"

static struct ts_fakegw fake;
static char url[512], dir[] = "/tmp/test_notify.XXXXXX", sock_path[600], config[600];
static char log_path[600];
static int sock = -1, port;
static PGconn *db;

/* A port nothing listens on now (bound, read, released). */
static int free_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), p;

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	p = ntohs(a.sin_port);
	close(fd);
	return p;
}

/* 1 when an HTTP server answers on 127.0.0.1:port (any status). */
static int listener_answers(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET,
	                        .sin_port = htons((uint16_t)port),
	                        .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	const char req[] = "GET /healthz HTTP/1.0\r\n\r\n";
	char buf[16] = "";
	int fd = socket(AF_INET, SOCK_STREAM, 0), ok = 0;
	ssize_t n;

	if (fd < 0)
		return 0;
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
	    write(fd, req, sizeof(req) - 1) == (ssize_t)sizeof(req) - 1) {
		n = read(fd, buf, sizeof(buf) - 1);
		ok = n > 0 && strncmp(buf, "HTTP/1.", 7) == 0;
	}
	close(fd);
	return ok;
}

/* The next datagram within timeout_ms into msg; 0, or -1 on timeout. */
static int next_message(char *msg, size_t len, long timeout_ms)
{
	struct pollfd p = {.fd = sock, .events = POLLIN};
	ssize_t n;

	if (poll(&p, 1, (int)timeout_ms) <= 0)
		return -1;
	n = recv(sock, msg, len - 1, 0);
	assert_true(n >= 0);
	msg[n] = '\0';
	return 0;
}

/* Reads datagrams until one has a line starting with want; fails after
 * timeout_ms. */
static void expect_message(const char *want, long timeout_ms)
{
	long deadline = ts_ms_now() + timeout_ms;
	char msg[1024];

	while (ts_ms_now() < deadline) {
		if (next_message(msg, sizeof(msg), deadline - ts_ms_now()) < 0)
			break;
		for (char *line = strtok(msg, "\n"); line; line = strtok(NULL, "\n"))
			if (strncmp(line, want, strlen(want)) == 0)
				return;
	}
	fail_msg("no '%s' from billingd within %ld ms: %s", want, timeout_ms,
	         ts_read_file(log_path));
}

static pid_t start_daemon(void)
{
	char notify[700], dburl[600];
	const char *argv[] = {ts_bin("billingd"), "-c", config, NULL};
	const char *env[] = {notify, dburl, NULL};

	snprintf(notify, sizeof(notify), "NOTIFY_SOCKET=%s", sock_path);
	snprintf(dburl, sizeof(dburl), "DATABASE_URL=%s", url);
	unlink(log_path);
	return ts_spawn(argv, env, log_path);
}

static void test_ready_after_listener(void **state)
{
	long deadline = ts_ms_now() + 20000;
	char msg[1024];
	pid_t pid;
	int status;

	(void)state;
	pid = start_daemon();
	for (;;) {
		if (next_message(msg, sizeof(msg), deadline - ts_ms_now()) < 0) {
			ts_kill_pid(pid);
			fail_msg("no READY=1 within 20 s: %s", ts_read_file(log_path));
		}
		if (strstr(msg, "READY=1"))
			break;
	}
	/* Nothing is awaited here: the listener answers as READY=1 arrives. */
	if (!listener_answers()) {
		ts_kill_pid(pid);
		fail_msg("READY=1 came before the listener on port %d answered", port);
	}
	expect_message("STATUS=last pass: 0 charged, 0 succeeded", 10000);
	expect_message("WATCHDOG=1", 5000);
	expect_message("WATCHDOG=1", 5000);

	kill(pid, SIGHUP);
	expect_message("RELOADING=1", 5000);
	expect_message("READY=1", 5000);

	kill(pid, SIGTERM);
	expect_message("STOPPING=1", 10000);
	status = ts_wait_pid(pid, 10000);
	if (status == -1)
		ts_kill_pid(pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void test_no_ready_on_old_schema(void **state)
{
	char err[512], msg[1024];
	pid_t pid;
	int status;

	(void)state;
	if (db_exec(db, "SET client_min_messages = warning", 0, NULL, err, sizeof(err)) < 0 ||
	    db_exec(db, "DROP SCHEMA public CASCADE", 0, NULL, err, sizeof(err)) < 0 ||
	    db_exec(db, "CREATE SCHEMA public", 0, NULL, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	pid = start_daemon();
	status = ts_wait_pid(pid, 20000);
	if (status == -1) {
		ts_kill_pid(pid);
		fail_msg("billingd runs on an old schema");
	}
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 1);
	while (next_message(msg, sizeof(msg), 0) == 0)
		if (strstr(msg, "READY=1"))
			fail_msg("READY=1 from a daemon that did not start: %s", msg);
}

static int setup(void **state)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	char extra[256];

	(void)state;
	assert_non_null(mkdtemp(dir));
	ts_fakegw_start(&fake, NULL);
	snprintf(url, sizeof(url), "%s", ts_db_new("notify"));
	db = ts_db_connect(url);
	ts_sync_plans(db);
	port = free_port();
	snprintf(extra, sizeof(extra),
	         "listen:\n  address: 127.0.0.1:%d\nbilling:\n  poll_interval_ms: 100\n", port);
	snprintf(config, sizeof(config), "%s", ts_write_config(dir, url, &fake, extra));
	snprintf(log_path, sizeof(log_path), "%s/billingd.log", dir);
	snprintf(sock_path, sizeof(sock_path), "%s/notify", dir);
	assert_true(strlen(sock_path) < sizeof(a.sun_path));
	memcpy(a.sun_path, sock_path, strlen(sock_path) + 1);
	sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(sock >= 0);
	assert_int_equal(bind(sock, (struct sockaddr *)&a, sizeof(a)), 0);
	return 0;
}

static int teardown(void **state)
{
	char cmd[700];

	(void)state;
	close(sock);
	PQfinish(db);
	ts_fakegw_stop(&fake);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_ready_after_listener),
	    cmocka_unit_test(test_no_ready_on_old_schema),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
