/* support_fakegw.c: the fake gateway (build/fakegw) as a test fixture: start
 * and stop the subprocess, and talk to its control and hosted-page URLs. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <curl/curl.h>

#include "buf.h"
#include "support.h"

#define MAX_ARGS 32

static void die(const char *what, const char *detail)
{
	fprintf(stderr, "test support: fakegw: %s: %s\n", what, detail);
	abort();
}

/* Reads the "port=N" line the fake prints once listening (10 s at most). */
static int read_port(int fd)
{
	char line[64];
	size_t len = 0;

	while (len < sizeof(line) - 1) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		ssize_t n;

		if (poll(&p, 1, 10000) <= 0)
			return -1;
		n = read(fd, line + len, 1);
		if (n <= 0)
			return -1;
		if (line[len] == '\n')
			break;
		len++;
	}
	line[len] = '\0';
	return strncmp(line, "port=", 5) == 0 ? atoi(line + 5) : -1;
}

void ts_fakegw_start(struct ts_fakegw *g, const char *extra_args)
{
	char *argv[MAX_ARGS + 1], *extra = strdup(extra_args ? extra_args : "");
	char *save = NULL;
	int argc = 0, fds[2];

	if (!extra)
		die("start", "out of memory");
	argv[argc++] = (char *)ts_bin("fakegw");
	argv[argc++] = "--key";
	argv[argc++] = TS_KEY;
	argv[argc++] = "--mch-id";
	argv[argc++] = TS_MCH_ID;
	argv[argc++] = "--port";
	argv[argc++] = "0";
	for (char *a = strtok_r(extra, " ", &save); a; a = strtok_r(NULL, " ", &save)) {
		if (argc == MAX_ARGS)
			die("start", "too many arguments");
		argv[argc++] = a;
	}
	argv[argc] = NULL;
	if (pipe(fds) < 0)
		die("pipe", strerror(errno));
	g->pid = fork();
	if (g->pid < 0)
		die("fork", strerror(errno));
	if (g->pid == 0) {
		/* The fake must not outlive a test program that aborts. */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		dup2(fds[1], STDOUT_FILENO);
		close(fds[0]);
		close(fds[1]);
		execv(argv[0], argv);
		fprintf(stderr, "test support: exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(fds[1]);
	g->port = read_port(fds[0]);
	close(fds[0]);
	free(extra);
	if (g->port <= 0) {
		ts_fakegw_stop(g);
		die("start", "no port=N line from build/fakegw");
	}
	snprintf(g->base_url, sizeof(g->base_url), "http://127.0.0.1:%d/v2", g->port);
}

void ts_fakegw_stop(struct ts_fakegw *g)
{
	int status = 0;

	if (g->pid <= 0)
		return;
	kill(g->pid, SIGTERM);
	while (waitpid(g->pid, &status, 0) < 0 && errno == EINTR)
		;
	g->pid = 0;
	/* A sanitizer report in the fake shows up as a non-zero exit. */
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		die("stop", "build/fakegw did not exit cleanly");
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *udata)
{
	return buf_add(udata, data, size * nmemb) < 0 ? 0 : size * nmemb;
}

/* GET (json NULL) or POST url; returns the HTTP status (0 when there was no
 * answer) and the body in *resp when resp is not NULL. */
static long http(const char *url, const char *json, char **resp, char **location)
{
	CURL *h = curl_easy_init();
	struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
	struct buf b = {0};
	long code = 0;

	if (!h || !hdr)
		die("curl", "init failed");
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 30000L);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
	if (json) {
		curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, json);
	}
	if (curl_easy_perform(h) == CURLE_OK)
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
	if (location) {
		struct curl_header *loc = NULL;

		*location = NULL;
		if (code && curl_easy_header(h, "Location", 0, CURLH_HEADER, -1, &loc) == CURLHE_OK)
			*location = strdup(loc->value);
	}
	curl_slist_free_all(hdr);
	curl_easy_cleanup(h);
	if (resp)
		*resp = b.p ? b.p : strdup("");
	else
		free(b.p);
	return code;
}

long ts_fakegw_post(const struct ts_fakegw *g, const char *path, const char *json, char **resp)
{
	char url[256];

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/_fake/%s", g->port, path);
	return http(url, json ? json : "{}", resp, NULL);
}

cJSON *ts_fakegw_ledger(const struct ts_fakegw *g)
{
	char url[256], *body = NULL;
	cJSON *j;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/_fake/ledger", g->port);
	if (http(url, NULL, &body, NULL) != 200)
		die("ledger", body ? body : "no answer");
	j = cJSON_Parse(body);
	free(body);
	if (!j)
		die("ledger", "not JSON");
	return j;
}

char *ts_fakegw_hosted(const char *pay_url, const char *card_query)
{
	size_t len = strlen(pay_url) + strlen(card_query) + 2;
	char *url = malloc(len), *location = NULL;

	if (!url)
		die("hosted", "out of memory");
	snprintf(url, len, "%s&%s", pay_url, card_query);
	http(url, NULL, NULL, &location);
	free(url);
	return location;
}
