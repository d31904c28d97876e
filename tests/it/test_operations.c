/* test_operations.c: billingd as an operator runs it, over real HTTP with
 * build/fakegw and the test database: the merchant key proven at start and
 * at each reload (exit 2, nothing sent), a SIGHUP that rotates the key in
 * the listener too, the admin address (/healthz, /metrics) apart from the
 * public one, a charge counted once however many queries it took, a key
 * refused at run time backing off, and the public port under a slowloris
 * attack (SLOW_CONNS connections, 2000 unless set) while callbacks and
 * /healthz still answer. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>
#include <curl/curl.h>
#include <cjson/cJSON.h>

#include "calendar.h"
#include "db.h"
#include "gateway.h"
#include "sign.h"
#include "support.h"

#define NOW_ISO "2026-03-02T12:00:00Z"
#define NEW_KEY "NEWKEY0123456789abcdef"
#define LISTEN                                                                                     \
	"listen:\n  address: 127.0.0.1:0\nbilling:\n  poll_interval_ms: 100\n"                     \
	"enrolment:\n  success_url: https://shop.example/welcome\n"

static struct ts_fakegw fake;
static char db_url[512], dir[128], config[512], logpath[512];
static PGconn *db;
static pid_t pid;

/* ---- fixtures ---- */

static void env_start(const char *name, const char *fake_args)
{
	ts_fakegw_start(&fake, fake_args);
	snprintf(db_url, sizeof(db_url), "%s", ts_db_new(name));
	db = ts_db_connect(db_url);
	ts_sync_plans(db);
	snprintf(dir, sizeof(dir), "/tmp/test_operations.XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(config, sizeof(config), "%s", ts_write_config(dir, db_url, &fake, LISTEN));
	snprintf(logpath, sizeof(logpath), "%s/billingd.log", dir);
}

static int teardown(void **state)
{
	char cmd[256];

	(void)state;
	if (pid > 0)
		ts_kill_pid(pid);
	pid = 0;
	PQfinish(db);
	db = NULL;
	ts_fakegw_stop(&fake);
	/* KEEP_TMP=1 keeps the configuration and the daemon's log to look at */
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (getenv("KEEP_TMP"))
		fprintf(stderr, "# kept %s\n", dir);
	else if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	return 0;
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void write_key(const char *key)
{
	char path[256], line[64];

	snprintf(path, sizeof(path), "%s/merchant.key", dir);
	snprintf(line, sizeof(line), "%s\n", key);
	write_file(path, line);
}

static pid_t daemon_start(void)
{
	char env_db[600];
	const char *argv[] = {ts_bin("billingd"), "-c", config, "--now", NOW_ISO, NULL};
	const char *env[] = {env_db, NULL};

	snprintf(env_db, sizeof(env_db), "DATABASE_URL=%s", db_url);
	return ts_spawn(argv, env, logpath);
}

/* The first log line containing what, from offset on (malloc'd), waiting up
 * to timeout_ms; fails the test without one. */
static char *wait_line(const char *what, size_t offset, long timeout_ms)
{
	long deadline = ts_ms_now() + timeout_ms;

	for (;;) {
		char *text = access(logpath, F_OK) == 0 ? ts_read_file(logpath) : NULL;
		char *hit = text && strlen(text) > offset ? strstr(text + offset, what) : NULL;

		if (hit) {
			char *start = hit, *end = strchr(hit, '\n'), *line;

			while (start > text && start[-1] != '\n')
				start--;
			line = strndup(start, end ? (size_t)(end - start) : strlen(start));
			free(text);
			return line;
		}
		free(text);
		if (ts_ms_now() >= deadline)
			fail_msg("no '%s' in %s after %ld ms", what, logpath, timeout_ms);
		ts_sleep_ms(20);
	}
}

static size_t log_size(void)
{
	char *text = access(logpath, F_OK) == 0 ? ts_read_file(logpath) : NULL;
	size_t n = text ? strlen(text) : 0;

	free(text);
	return n;
}

/* The port of the log line with event (listening, admin_listening). */
static int port_of(const char *event)
{
	char want[64], port[16];
	char *line;

	snprintf(want, sizeof(want), "event=%s ", event);
	line = wait_line(want, 0, 10000);
	assert_int_equal(ts_logfmt_get(line, "port", port, sizeof(port)), 0);
	free(line);
	return atoi(port);
}

static long fake_requests(const char *endpoint)
{
	cJSON *l = ts_fakegw_ledger(&fake);
	long n = (long)cJSON_GetNumberValue(
	    cJSON_GetObjectItem(cJSON_GetObjectItem(l, "requests"), endpoint));

	cJSON_Delete(l);
	return n;
}

static void fake_fault(const char *endpoint, const char *kind, int count)
{
	char json[160];

	snprintf(json, sizeof(json), "{\"endpoint\":\"%s\",\"kind\":\"%s\",\"count\":%d}", endpoint,
	         kind, count);
	assert_int_equal(ts_fakegw_post(&fake, "faults", json, NULL), 200);
}

static long now_unix(void)
{
	int64_t t;
	char err[256];

	assert_int_equal(cal_parse_time(NOW_ISO, &t, err, sizeof(err)), 0);
	return (long)t;
}

/* A bound customer (enrolled at the fake), with one subscription due at
 * NOW_ISO when subscribe is set. */
static void bound_customer(const char *customer, int subscribe)
{
	struct cfg c;
	struct gw_client *gw;
	char err[256];

	ts_cfg(&c, db_url, &fake);
	gw = gw_client_new(&c.gateway, err, sizeof(err));
	assert_non_null(gw);
	ts_enrol(db, gw, customer, NULL);
	gw_client_free(gw);
	if (subscribe)
		ts_subscribe(db, customer, "weekly", now_unix() - 600);
}

/* ---- HTTP ---- */

struct resp {
	long status;
	char body[512];
	size_t len;
};

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
	struct resp *r = arg;
	size_t k = size * n, room = sizeof(r->body) - 1 - r->len;

	memcpy(r->body + r->len, p, k < room ? k : room);
	r->len += k < room ? k : room;
	r->body[r->len] = '\0';
	return k;
}

/* GET (body NULL) or POST url; the status (0: no answer) and body in r;
 * how long it took in ms. */
static long http(const char *url, const char *body, struct resp *r)
{
	CURL *h = curl_easy_init();
	long t0 = ts_ms_now();

	memset(r, 0, sizeof(*r));
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 10000L);
	if (body)
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
	if (curl_easy_perform(h) == CURLE_OK)
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
	curl_easy_cleanup(h);
	return ts_ms_now() - t0;
}

static const char *url_at(int port, const char *path)
{
	static char url[4][4096];
	static int next;
	char *u = url[next++ % 4];

	snprintf(u, sizeof(url[0]), "http://127.0.0.1:%d%s", port, path);
	return u;
}

/* A signed payment notification for order, as the gateway POSTs it. */
static char *notify_body(const char *key, const char *order, const char *cents)
{
	char po[64];
	struct sign_kv kv[] = {{"payOrderId", po},    {"mchId", TS_MCH_ID},
	                       {"mchOrderNo", order}, {"transId", "T-BANK-1"},
	                       {"currency", "CAD"},   {"amount", cents},
	                       {"status", "2"},       {"paySuccTime", "2026-03-02 12:00:00"}};
	size_t n = sizeof(kv) / sizeof(kv[0]);
	cJSON *o = cJSON_CreateObject();
	char sign[33], *s;

	snprintf(po, sizeof(po), "PO-%s", order);
	for (size_t i = 0; i < n; i++)
		if (strcmp(kv[i].key, "amount") == 0 || strcmp(kv[i].key, "status") == 0)
			cJSON_AddNumberToObject(o, kv[i].key, atof(kv[i].value));
		else
			cJSON_AddStringToObject(o, kv[i].key, kv[i].value);
	sign_compute(kv, n, key, sign);
	cJSON_AddStringToObject(o, "sign", sign);
	s = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	return s;
}

/* The card page's signed return for customer, as the browser brings it. */
static const char *return_path(const char *key, const char *customer)
{
	static char path[1024];
	struct sign_kv kv[] = {{"retCode", "SUCCESS"},
	                       {"customerId", customer},
	                       {"cardNumber", "450116XXXXXX7214"},
	                       {"expirationDate", "0728"},
	                       {"cardType", "V"}};
	char sign[33];

	sign_compute(kv, sizeof(kv) / sizeof(kv[0]), key, sign);
	snprintf(path, sizeof(path),
	         "/iotpay/return?retCode=SUCCESS&customerId=%s&cardNumber=450116XXXXXX7214&"
	         "expirationDate=0728&cardType=V&sign=%s",
	         customer, sign);
	return path;
}

/* A pay-link charge awaiting its payment. */
static void one_off(const char *customer, const char *order)
{
	char err[512];
	const char *p[] = {order, customer};

	if (db_exec(db,
	            "INSERT INTO customers (customer_id, email) VALUES ($1, 'x@example.com') "
	            "ON CONFLICT DO NOTHING",
	            1, p + 1, err, sizeof(err)) < 0 ||
	    db_exec(db,
	            "INSERT INTO charges (mch_order_no, kind, customer_id, amount_cents) "
	            "VALUES ($1, 'one_off', $2, 100)",
	            2, p, err, sizeof(err)) < 0)
		fail_msg("%s", err);
}

/* POSTs the notify for order signed with key; 1 when it was taken. */
static int notify_taken(int port, const char *key, const char *order)
{
	char *body = notify_body(key, order, "100");
	struct resp r;

	http(url_at(port, "/iotpay/notify"), body, &r);
	free(body);
	assert_int_equal(r.status, 200);
	return strcmp(r.body, "SUCCESS") == 0;
}

/* ---- the key, proven ---- */

static int run_to_exit(char *err_line, size_t len)
{
	int status;
	char *text;

	pid = daemon_start();
	status = ts_wait_pid(pid, 20000);
	if (status == -1)
		fail_msg("billingd still running with a refused key");
	pid = 0;
	text = ts_read_file(logpath);
	snprintf(err_line, len, "%s", text);
	free(text);
	unlink(logpath);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void test_refused_key_or_mch_id_exit_2(void **state)
{
	struct ts_fakegw other;
	char out[4096];

	(void)state;
	env_start("ops_key", NULL);
	bound_customer("k1", 1);

	write_key("WRONGKEY0123456789");
	assert_int_equal(run_to_exit(out, sizeof(out)), 2);
	assert_string_equal(out, "billingd: the gateway refused the merchant key (sign error): "
	                         "check gateway.merchant_key_file or IOTPAY_MERCHANT_KEY\n");
	assert_int_equal(fake_requests("cc_purchasewithtoken"), 0);
	assert_int_equal(ts_db_long(db, "SELECT count(*) FROM charges"), 0);

	/* the right key, at a gateway that knows another merchant */
	write_key(TS_KEY);
	ts_fakegw_start(&other, "--mch-id 99999999");
	snprintf(config, sizeof(config), "%s", ts_write_config(dir, db_url, &other, LISTEN));
	assert_int_equal(run_to_exit(out, sizeof(out)), 2);
	assert_string_equal(out, "billingd: the gateway refused gateway.mch_id (mchId error)\n");
	ts_fakegw_stop(&other);
	assert_int_equal(ts_db_long(db, "SELECT count(*) FROM charges"), 0);

	/* both right: it runs and charges */
	snprintf(config, sizeof(config), "%s", ts_write_config(dir, db_url, &fake, LISTEN));
	pid = daemon_start();
	free(wait_line("event=credentials_proven", 0, 10000));
	assert_int_equal(
	    ts_db_wait(db_url, "SELECT count(*) FROM charges WHERE state = 'succeeded'", 1, 15000),
	    1);
}

/* ---- SIGHUP: the whole configuration, the listener included ---- */

static void test_sighup_rotates_the_listeners_key(void **state)
{
	char args[64];
	size_t at;
	int port;

	(void)state;
	env_start("ops_hup", NULL);
	one_off("h1", "OPS-H1");
	one_off("h1", "OPS-H2");
	one_off("h1", "OPS-H3");
	one_off("h1", "OPS-H4");
	pid = daemon_start();
	port = port_of("listening");
	assert_true(notify_taken(port, TS_KEY, "OPS-H1"));

	/* the gateway now knows the new key only: so must we */
	snprintf(args, sizeof(args), "--key %s --port %d", NEW_KEY, fake.port);
	ts_fakegw_stop(&fake);
	ts_fakegw_start(&fake, args);
	write_key(NEW_KEY);
	at = log_size();
	kill(pid, SIGHUP);
	free(wait_line("event=reloaded", at, 10000));
	assert_false(notify_taken(port, TS_KEY, "OPS-H2"));
	assert_true(notify_taken(port, NEW_KEY, "OPS-H2"));

	/* a key the gateway refuses is not applied: the running one stays */
	write_key("REFUSED0123456789");
	at = log_size();
	kill(pid, SIGHUP);
	free(wait_line("the gateway refused the merchant key (sign error)", at, 10000));
	assert_true(notify_taken(port, NEW_KEY, "OPS-H3"));

	/* where it listens needs a restart, said in one line per setting */
	write_key(NEW_KEY);
	snprintf(config, sizeof(config), "%s",
	         ts_write_config(dir, db_url, &fake,
	                         "listen:\n  address: 127.0.0.1:1\n"
	                         "admin:\n  address: 127.0.0.1:2\n"));
	write_key(NEW_KEY);
	at = log_size();
	kill(pid, SIGHUP);
	free(wait_line("event=reload_needs_restart setting=listen.address", at, 10000));
	free(wait_line("event=reload_needs_restart setting=admin.address", at, 10000));
	free(wait_line("event=reloaded", at, 10000));
	assert_true(notify_taken(port, NEW_KEY, "OPS-H4"));
}

/* ---- the admin address ---- */

/* The value of series in a /metrics body (-1 when absent). */
static double sample(const char *body, const char *series)
{
	size_t n = strlen(series);

	for (const char *p = body; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
		if (strncmp(p, series, n) == 0 && p[n] == ' ')
			return atof(p + n + 1);
	return -1;
}

static void scrape(int admin, char **out)
{
	CURL *h = curl_easy_init();
	char *body = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&body, &len);

	curl_easy_setopt(h, CURLOPT_URL, url_at(admin, "/metrics"));
	curl_easy_setopt(h, CURLOPT_WRITEDATA, f);
	assert_int_equal(curl_easy_perform(h), CURLE_OK);
	curl_easy_cleanup(h);
	fclose(f);
	*out = body;
}

static void test_admin_apart_and_health_reveals_no_host(void **state)
{
	struct resp r;
	int port, admin;
	PGconn *cluster;
	char *m;

	(void)state;
	env_start("ops_admin", NULL);
	pid = daemon_start();
	port = port_of("listening");
	admin = port_of("admin_listening");
	assert_int_not_equal(port, admin);
	http(url_at(port, "/healthz"), NULL, &r);
	assert_int_equal(r.status, 404);
	http(url_at(port, "/metrics"), NULL, &r);
	assert_int_equal(r.status, 404);
	http(url_at(admin, "/healthz"), NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "ok\n");
	http(url_at(admin, "/iotpay/notify"), "{}", &r);
	assert_int_equal(r.status, 404);

	/* the database gone: the part that fails, no host, port or user */
	assert_non_null(strstr(db_url, "127.0.0.1"));
	cluster = ts_db_connect(getenv("DATABASE_URL"));
	ts_db_long(cluster, "ALTER DATABASE t_ops_admin ALLOW_CONNECTIONS false");
	ts_db_long(db, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
	               "application_name LIKE 'billingd-admin:%'");
	http(url_at(admin, "/healthz"), NULL, &r);
	assert_int_equal(r.status, 503);
	assert_string_equal(r.body, "database\n");
	ts_db_long(cluster, "ALTER DATABASE t_ops_admin ALLOW_CONNECTIONS true");
	PQfinish(cluster);

	scrape(admin, &m);
	assert_true(sample(m, "billing_leader") == 1);
	free(m);
}

/* ---- one charge, counted once ---- */

static void test_unknown_resolved_after_three_queries_counts_one(void **state)
{
	const char *outcomes[] = {"success", "declined", "busy", "absent"};
	char series[96], *m;
	double total = 0;
	int admin;

	(void)state;
	env_start("ops_count", NULL);
	bound_customer("u1", 1);
	/* the charge is made, its answer lost; the proof at start takes the
	 * first cc_query fault (nothing proven: a warning), the re-queries the
	 * other two, and the third re-query finds it */
	fake_fault("cc_purchasewithtoken", "drop_after", 1);
	fake_fault("cc_query", "http5xx", 3);
	pid = daemon_start();
	admin = port_of("admin_listening");
	assert_int_equal(
	    ts_db_wait(db_url, "SELECT count(*) FROM charges WHERE state = 'succeeded'", 1, 20000),
	    1);
	assert_int_equal(fake_requests("cc_query"), 4);
	assert_int_equal(ts_db_long(db, "SELECT count(*) FROM charges"), 1);
	scrape(admin, &m);
	for (size_t i = 0; i < sizeof(outcomes) / sizeof(outcomes[0]); i++) {
		snprintf(series, sizeof(series), "billing_charges_total{outcome=\"%s\"}",
		         outcomes[i]);
		total += sample(m, series);
	}
	assert_true(total == 1);
	assert_true(sample(m, "billing_charges_total{outcome=\"success\"}") == 1);
	assert_true(sample(m, "billing_charge_queries_total{outcome=\"unknown\"}") == 2);
	assert_true(sample(m, "billing_charge_queries_total{outcome=\"success\"}") == 1);
	assert_true(sample(m, "billing_charged_cents_total{currency=\"CAD\"}") > 0);
	assert_true(sample(m, "billing_last_pass_timestamp_seconds") > 0);
	assert_true(sample(m, "billing_unknown_charges") == 0);
	free(m);
}

/* ---- a key refused at run time ---- */

static void test_refused_at_run_time_backs_off(void **state)
{
	char args[64], level[16], *line, *m;
	long sent;
	int admin;

	(void)state;
	env_start("ops_backoff", NULL);
	bound_customer("b1", 1);
	/* a charge whose answer is lost, and queries that get no answer: it
	 * stays unknown and is queried every pass */
	fake_fault("cc_purchasewithtoken", "drop_after", 1);
	fake_fault("cc_query", "http5xx", 100000);
	pid = daemon_start();
	admin = port_of("admin_listening");
	assert_int_equal(
	    ts_db_wait(db_url, "SELECT count(*) FROM charges WHERE state = 'unknown'", 1, 15000),
	    1);
	/* the gateway rotates the key under us */
	snprintf(args, sizeof(args), "--key %s --port %d", NEW_KEY, fake.port);
	ts_fakegw_stop(&fake);
	ts_fakegw_start(&fake, args);
	line = wait_line("event=gateway_backoff", 0, 15000);
	assert_int_equal(ts_logfmt_get(line, "level", level, sizeof(level)), 0);
	assert_string_equal(level, "error");
	free(line);
	line = wait_line("sign error\"", 0, 1000);
	assert_int_equal(ts_logfmt_get(line, "level", level, sizeof(level)), 0);
	assert_string_equal(level, "error");
	free(line);
	/* then quiet for the back-off (5 s, doubling) instead of every pass */
	sent = fake_requests("cc_query");
	assert_true(sent >= 1);
	ts_sleep_ms(3000);
	assert_int_equal(fake_requests("cc_query"), sent);
	scrape(admin, &m);
	assert_true(sample(m, "billing_gateway_errors_total{reason=\"auth\"}") >= 1);
	free(m);
}

/* ---- slowloris ---- */

static int slow_conns(void)
{
	const char *v = getenv("SLOW_CONNS");

	return v && atoi(v) > 0 ? atoi(v) : 2000;
}

/* A connection from from (127.x.y.z) to port that sends the start of a
 * request and then nothing; -1 when refused. */
static int slow_open(const char *from, int port)
{
	struct sockaddr_in src = {.sin_family = AF_INET}, dst = {.sin_family = AF_INET};
	static const char start[] = "GET /iotpay/return?customerId=";
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0)
		return -1;
	inet_pton(AF_INET, from, &src.sin_addr);
	dst.sin_port = htons((uint16_t)port);
	dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0 ||
	    connect(fd, (struct sockaddr *)&dst, sizeof(dst)) < 0 ||
	    write(fd, start, sizeof(start) - 1) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static void test_slowloris(void **state)
{
	int n = slow_conns(), *fds = calloc((size_t)n, sizeof(int)), port, admin, opened = 0;
	struct rlimit rl;
	struct resp r;
	char from[32];
	long ms;

	(void)state;
	assert_non_null(fds);
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_cur < (rlim_t)n + 64)
		skip();
	env_start("ops_slow", NULL);
	one_off("s1", "OPS-S1");
	pid = daemon_start();
	port = port_of("listening");
	admin = port_of("admin_listening");
	/* half from one address (as one attacker: held to its per-address
	 * share), half spread over many (counting against the overall limit) */
	for (int i = 0; i < n; i++) {
		if (i < n / 2)
			snprintf(from, sizeof(from), "127.0.0.2");
		else
			snprintf(from, sizeof(from), "127.0.%d.%d", 3 + i / 50 / 250,
			         i / 50 % 250 + 1);
		fds[i] = slow_open(from, port);
		opened += fds[i] >= 0;
	}
	print_message("# %d slow connections opened of %d\n", opened, n);
	ms = http(url_at(admin, "/healthz"), NULL, &r);
	assert_int_equal(r.status, 200);
	assert_true(ms < 1000);
	assert_true(notify_taken(port, TS_KEY, "OPS-S1"));
	http(url_at(port, return_path(TS_KEY, "s1")), NULL, &r);
	assert_int_equal(r.status, 302);
	ms = http(url_at(admin, "/metrics"), NULL, &r);
	assert_int_equal(r.status, 200);
	assert_true(ms < 1000);
	for (int i = 0; i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	free(fds);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(test_refused_key_or_mch_id_exit_2, teardown),
	    cmocka_unit_test_teardown(test_sighup_rotates_the_listeners_key, teardown),
	    cmocka_unit_test_teardown(test_admin_apart_and_health_reveals_no_host, teardown),
	    cmocka_unit_test_teardown(test_unknown_resolved_after_three_queries_counts_one,
	                              teardown),
	    cmocka_unit_test_teardown(test_refused_at_run_time_backs_off, teardown),
	    cmocka_unit_test_teardown(test_slowloris, teardown),
	};

	curl_global_init(CURL_GLOBAL_DEFAULT);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
