/* test_config: billing.yaml loading: defaults, env overrides, and each kind of
 * bad configuration with its one error line, through cfg_load and through
 * `billingd --check-config` (exit 2). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <ftw.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "config.h"
#include "support.h"

static char dir[] = "/tmp/billing-cfg.XXXXXX";
static char keypath[512], emptyplans[512];

static const char *write_yaml(const char *body)
{
	static char path[600];
	FILE *f;

	snprintf(path, sizeof(path), "%s/billing.yaml", dir);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(body, f);
	fclose(f);
	return path;
}

/* A valid file with `extra` spliced in after the gateway section. */
static const char *yaml_with(const char *gateway_extra, const char *tail)
{
	static char body[4096];

	snprintf(body, sizeof(body),
	         "gateway:\n"
	         "  mch_id: \"10000701\"\n"
	         "  job_no: jack123\n"
	         "  merchant_key_file: %s\n"
	         "%s"
	         "database:\n"
	         "  url: postgresql://u@127.0.0.1:1/x\n"
	         "plans_dir: %s\n"
	         "%s",
	         keypath, gateway_extra, emptyplans, tail);
	return write_yaml(body);
}

static int load(const char *path, char *err, size_t len)
{
	struct cfg c;
	return cfg_load(&c, path, err, len);
}

static void expect_error(const char *path, const char *want)
{
	char err[512] = "";

	assert_int_equal(load(path, err, sizeof(err)), -1);
	if (!strstr(err, want))
		fail_msg("error '%s' does not contain '%s'", err, want);
	assert_null(strchr(err, '\n'));
}

static int setup(void **state)
{
	FILE *f;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(keypath, sizeof(keypath), "%s/merchant.key", dir);
	f = fopen(keypath, "w");
	fputs("SECRETKEY42\n", f);
	fclose(f);
	chmod(keypath, 0600);
	snprintf(emptyplans, sizeof(emptyplans), "%s/plans", dir);
	mkdir(emptyplans, 0755);
	unsetenv("DATABASE_URL");
	unsetenv("IOTPAY_MERCHANT_KEY");
	return 0;
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path);
}

/* The folder and what the tests wrote in it. */
static int teardown(void **state)
{
	(void)state;
	return nftw(dir, remove_one, 8, FTW_DEPTH | FTW_PHYS);
}

static void test_defaults_and_values(void **state)
{
	struct cfg c;
	char err[512];

	(void)state;
	assert_int_equal(cfg_load(&c, yaml_with("  timeout_ms: 2500\n", ""), err, sizeof(err)), 0);
	assert_string_equal(c.gateway.base_url, "https://api.iotpaycloud.com/v2");
	assert_string_equal(c.gateway.mch_id, "10000701");
	assert_string_equal(c.gateway.merchant_key, "SECRETKEY42");
	assert_int_equal(c.gateway.timeout_ms, 2500);
	assert_int_equal(c.gateway.max_in_flight, 64);
	assert_string_equal(c.order_prefix, "BD");
	assert_string_equal(c.listen_address, "127.0.0.1:8080");
	assert_string_equal(c.database_url, "postgresql://u@127.0.0.1:1/x");
}

static void test_env_overrides(void **state)
{
	struct cfg c;
	char err[512];

	(void)state;
	setenv("DATABASE_URL", "postgresql:///fromenv", 1);
	assert_int_equal(cfg_load(&c, yaml_with("", ""), err, sizeof(err)), 0);
	assert_string_equal(c.database_url, "postgresql:///fromenv");
	unsetenv("DATABASE_URL");
}

/* The key and the card tokens go to the gateway: in clear text only to this
 * machine, or when a test setup says so. */
static void test_gateway_https(void **state)
{
	struct cfg c;
	char err[512];
	static const char *const loopback[] = {
	    "http://127.0.0.1:9/v2", "http://127.8.9.10/v2", "http://localhost:80/v2",
	    "http://LOCALHOST/v2",   "http://[::1]:8080/v2", "https://api.example.com/v2",
	};
	static const char *const remote[] = {
	    "http://api.example.com/v2",
	    "http://127.0.0.1.example.com/v2",
	    "http://localhost.example.com/",
	    "http://127.0.0.1@example.com/v2",
	    "http://128.0.0.1/v2",
	    "http://[::2]/v2",
	    "http://127.1/v2",
	    "http://[::1/v2",
	    "",
	};
	char extra[256];

	(void)state;
	for (size_t i = 0; i < sizeof(loopback) / sizeof(loopback[0]); i++) {
		snprintf(extra, sizeof(extra), "  base_url: \"%s\"\n", loopback[i]);
		if (cfg_load(&c, yaml_with(extra, ""), err, sizeof(err)) < 0)
			fail_msg("%s: %s", loopback[i], err);
	}
	for (size_t i = 0; i < sizeof(remote) / sizeof(remote[0]); i++) {
		snprintf(extra, sizeof(extra), "  base_url: \"%s\"\n", remote[i]);
		expect_error(yaml_with(extra, ""),
		             "billing.yaml: gateway.base_url: must be https:// unless the host is "
		             "loopback or gateway.allow_insecure_http is true");
		snprintf(extra, sizeof(extra), "  base_url: \"%s\"\n  allow_insecure_http: true\n",
		         remote[i]);
		if (cfg_load(&c, yaml_with(extra, ""), err, sizeof(err)) < 0)
			fail_msg("%s with allow_insecure_http: %s", remote[i], err);
	}
	/* the setting may come before base_url */
	assert_int_equal(cfg_load(&c,
	                          yaml_with("  allow_insecure_http: true\n"
	                                    "  base_url: http://api.example.com/v2\n",
	                                    ""),
	                          err, sizeof(err)),
	                 0);
	expect_error(yaml_with("  allow_insecure_http: yes please\n", ""),
	             "billing.yaml:5: gateway.allow_insecure_http: expected true or false");
}

/* IOTPAY_MERCHANT_KEY is taken out of the environment (children and /proc
 * never see it) and kept for the process: a reload still has it. Run in a
 * child, since the process keeps it. */
static void test_env_key_taken_once(void **state)
{
	pid_t pid;
	int st;

	(void)state;
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct cfg c;
		char err[512];
		char *env = strdup("IOTPAY_MERCHANT_KEY=ENVKEY");
		int ok;

		putenv(env);
		ok = cfg_load(&c, yaml_with("", ""), err, sizeof(err)) == 0 &&
		     strcmp(c.gateway.merchant_key, "ENVKEY") == 0 &&
		     getenv("IOTPAY_MERCHANT_KEY") == NULL && strstr(env, "ENVKEY") == NULL;
		ok = ok && cfg_load(&c, yaml_with("", ""), err, sizeof(err)) == 0 &&
		     strcmp(c.gateway.merchant_key, "ENVKEY") == 0;
		cfg_wipe(&c);
		for (size_t i = 0; i < sizeof(c.gateway.merchant_key); i++)
			ok = ok && c.gateway.merchant_key[i] == 0;
		_exit(ok ? 0 : 1);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* The documented example is a valid configuration. */
static void test_example_loads(void **state)
{
	pid_t pid;
	int st;

	(void)state;
	/* with the key in the environment, which the process keeps: in a child */
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct cfg c;
		char err[512];

		setenv("IOTPAY_MERCHANT_KEY", "ENVKEY", 1);
		if (cfg_load(&c, "billing.yaml.example", err, sizeof(err)) < 0) {
			fprintf(stderr, "%s\n", err);
			_exit(1);
		}
		_exit(strcmp(c.plans_dir, "plans") == 0 && c.enrolment_expiry_hours == 72 ? 0 : 1);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void test_unknown_key(void **state)
{
	(void)state;
	expect_error(yaml_with("  timeout: 5\n", ""),
	             "billing.yaml:5: gateway.timeout: unknown key");
	expect_error(yaml_with("", "colour: blue\n"), "billing.yaml:8: colour: unknown key");
	expect_error(yaml_with("", "\"col\\nour\": blue\n"),
	             "billing.yaml:8: col\\nour: unknown key");
	expect_error(yaml_with("", "\"sec\\r\":\n  a: 1\n"),
	             "billing.yaml:8: sec\\r: unknown section");
	expect_error(yaml_with("", "logging:\n  level: 1\n"), "logging: unknown section");
}

static void test_wrong_type(void **state)
{
	(void)state;
	expect_error(yaml_with("  timeout_ms: soon\n", ""),
	             "billing.yaml:5: gateway.timeout_ms: expected an integer");
	expect_error(yaml_with("  max_in_flight: 0\n", ""),
	             "billing.yaml:5: gateway.max_in_flight: must be between 1 and 1024");
	expect_error(yaml_with("  base_url: [a, b]\n", ""),
	             "billing.yaml:5: gateway.base_url: expected a string");
	expect_error(yaml_with("  base_url: ftp://x\n", ""), "expected an http:// or https:// URL");
	expect_error(yaml_with("", "billing:\n  order_prefix: AB-1\n"),
	             "billing.order_prefix: 1 to 8 letters or digits, ending in a letter");
	/* "S1" + "2-..." would be "S" + "12-...": the prefix ends in a letter */
	expect_error(yaml_with("", "billing:\n  order_prefix: S1\n"),
	             "billing.order_prefix: 1 to 8 letters or digits, ending in a letter");
	expect_error(yaml_with("", "billing:\n  order_prefix: \"\"\n"),
	             "billing.order_prefix: 1 to 8 letters or digits, ending in a letter");
	expect_error(yaml_with("", "billing:\n  timezone: Mars/Olympus\n"),
	             "billing.timezone: unknown IANA timezone 'Mars/Olympus'");
	/* echoed on one line, escaped */
	expect_error(yaml_with("", "billing:\n  timezone: \"Mars/\\nOlympus\\e[2J\"\n"),
	             "billing.timezone: unknown IANA timezone 'Mars/\\nOlympus\\x1b[2J'");
}

static void test_missing_required(void **state)
{
	char body[1024];

	(void)state;
	snprintf(body, sizeof(body),
	         "gateway:\n  job_no: j\n  merchant_key_file: %s\ndatabase:\n  url: x\n", keypath);
	expect_error(write_yaml(body), "gateway.mch_id: required");
	snprintf(body, sizeof(body),
	         "gateway:\n  mch_id: \"1\"\n  job_no: j\ndatabase:\n  url: x\n");
	expect_error(write_yaml(body), "gateway.merchant_key_file: required");
	snprintf(body, sizeof(body),
	         "gateway:\n  mch_id: \"1\"\n  job_no: j\n  merchant_key_file: %s\n", keypath);
	expect_error(write_yaml(body), "database.url: required");
}

static void test_malformed_yaml(void **state)
{
	(void)state;
	expect_error(write_yaml("gateway:\n  mch_id: \"1\n  job_no: [\n"), "billing.yaml:");
	expect_error(write_yaml("- a\n- b\n"), "billing.yaml:1: expected a mapping of sections");
}

static void test_key_file_permissions(void **state)
{
	char err[512] = "";

	(void)state;
	chmod(keypath, 0640);
	assert_int_equal(load(yaml_with("", ""), err, sizeof(err)), -1);
	assert_non_null(strstr(err, "readable by group or others"));
	assert_null(strstr(err, "SECRETKEY42"));
	chmod(keypath, 0604);
	assert_int_equal(load(yaml_with("", ""), err, sizeof(err)), -1);
	chmod(keypath, 0600);
	assert_int_equal(load(yaml_with("", ""), err, sizeof(err)), 0);
}

/* events.*: defaults, the retry list as YAML gives it, a bad delay named,
 * the secret required with a URL, from a 0600 file (relative to the
 * configuration) or the environment, and never echoed. */
static void test_events_settings(void **state)
{
	char err[512] = "", path[600];
	struct cfg c;
	FILE *f;
	pid_t pid;
	int st;

	(void)state;
	unsetenv("BILLING_EVENTS_SECRET");
	assert_int_equal(cfg_load(&c, yaml_with("", ""), err, sizeof(err)), 0);
	assert_string_equal(c.events.url, "");
	assert_int_equal(c.events.timeout_ms, 10000);
	assert_int_equal(c.events.max_in_flight, 8);
	assert_int_equal(c.events.card_expiring_days, 30);
	assert_int_equal(c.events.nretry, 8);
	assert_int_equal(c.events.retry[0], 30);
	assert_int_equal(c.events.retry[1], 120);
	assert_int_equal(c.events.retry[7], 86400);
	assert_int_equal(
	    cfg_load(&c, yaml_with("", "events:\n  retry: [1s, 5m, 2h]\n"), err, sizeof(err)), 0);
	assert_int_equal(c.events.nretry, 3);
	assert_int_equal(c.events.retry[2], 7200);
	expect_error(yaml_with("", "events:\n  retry: [30s, soon]\n"),
	             "events.retry: 'soon' is not a delay");
	expect_error(yaml_with("", "events:\n  url: ftp://x\n"), "events.url: expected an http");
	expect_error(yaml_with("", "events:\n  url: http://127.0.0.1:9/hook\n"),
	             "events.secret_file: required with events.url");
	snprintf(path, sizeof(path), "%s/events.secret", dir);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs("EVSECRET77\n", f);
	fclose(f);
	chmod(path, 0644);
	expect_error(yaml_with("", "events:\n  url: http://127.0.0.1:9/hook\n"
	                           "  secret_file: events.secret\n"),
	             "events.secret_file: the file is readable by group or others");
	chmod(path, 0600);
	assert_int_equal(cfg_load(&c,
	                          yaml_with("", "events:\n  url: http://127.0.0.1:9/hook\n"
	                                        "  secret_file: events.secret\n"),
	                          err, sizeof(err)),
	                 0);
	assert_string_equal(c.events.secret, "EVSECRET77");
	/* the environment's secret is taken out of it and kept for the process
	 * (a reload still has it): in a child */
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int ok;

		setenv("BILLING_EVENTS_SECRET", "ENVSECRET", 1);
		ok = cfg_load(&c, yaml_with("", "events:\n  url: http://127.0.0.1:9/hook\n"), err,
		              sizeof(err)) == 0 &&
		     strcmp(c.events.secret, "ENVSECRET") == 0 &&
		     getenv("BILLING_EVENTS_SECRET") == NULL;
		ok = ok &&
		     cfg_load(&c, yaml_with("", "events:\n  url: http://127.0.0.1:9/hook\n"), err,
		              sizeof(err)) == 0 &&
		     strcmp(c.events.secret, "ENVSECRET") == 0;
		_exit(ok ? 0 : 1);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void write_key(const char *key)
{
	FILE *f = fopen(keypath, "w");

	assert_non_null(f);
	fputs(key, f);
	fclose(f);
}

/* A key longer than the buffer is refused, never cut to a wrong key. */
static void test_key_file_length(void **state)
{
	char key[300], err[512] = "";
	struct cfg c;

	(void)state;
	memset(key, 'k', 255);
	strcpy(key + 255, "\n");
	write_key(key);
	assert_int_equal(cfg_load(&c, yaml_with("", ""), err, sizeof(err)), 0);
	assert_int_equal(strlen(c.gateway.merchant_key), 255);
	memset(key, 'k', 256);
	strcpy(key + 256, "\n");
	write_key(key);
	expect_error(yaml_with("", ""), "gateway.merchant_key_file: longer than 255 bytes");
	assert_int_equal(load(yaml_with("", ""), err, sizeof(err)), -1);
	assert_null(strstr(err, "kkkk"));
	write_key("SECRETKEY42\nSECOND\n");
	expect_error(yaml_with("", ""), "gateway.merchant_key_file: more than one line");
	write_key("SECRETKEY42\n");
}

/* Runs billingd -c path --check-config; returns its exit status and stderr. */
static int check_config(const char *path, char *out, size_t len)
{
	char cmd[1024];
	FILE *p;
	size_t n;
	int st;

	snprintf(cmd, sizeof(cmd), "%s -c %s --check-config 2>&1", ts_bin("billingd"), path);
	p = popen(cmd, "r");
	assert_non_null(p);
	n = fread(out, 1, len - 1, p);
	out[n] = '\0';
	st = pclose(p);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_billingd_check_config(void **state)
{
	struct ts_fakegw g;
	char out[1024], gw[256];

	(void)state;
	ts_fakegw_start(&g, "--key SECRETKEY42");
	snprintf(gw, sizeof(gw), "  base_url: %s\n", g.base_url);
	assert_int_equal(check_config(yaml_with(gw, ""), out, sizeof(out)), 0);
	assert_non_null(strstr(out, "configuration ok"));
	assert_null(strstr(out, "warning"));
	assert_int_equal(check_config(yaml_with("  timeout_ms: soon\n", ""), out, sizeof(out)), 2);
	assert_non_null(strstr(out, "billing.yaml:5: gateway.timeout_ms: expected an integer\n"));
	/* one line */
	assert_null(strchr(out, '\n') == out + strlen(out) - 1 ? NULL : "more than one line");
	assert_int_equal(check_config("/nonexistent/billing.yaml", out, sizeof(out)), 2);
	assert_non_null(strstr(out, "/nonexistent/billing.yaml: No such file"));
	assert_null(strstr(out, "SECRETKEY42"));
	ts_fakegw_stop(&g);
}

/* --check-config proves mch_id and the key with the gateway: a refusal
 * names which, in one line, without the key; a gateway that cannot be
 * reached is a warning. */
static void test_billingd_check_config_proves_key(void **state)
{
	static const struct {
		const char *fake_args, *want;
	} refused[] = {
	    {"--key OTHERKEY", "billingd: the gateway refused the merchant key (sign error)"},
	    {"--key SECRETKEY42 --mch-id 99999",
	     "billingd: the gateway refused gateway.mch_id (mchId error)\n"},
	};
	struct ts_fakegw g;
	char out[1024], gw[256];

	(void)state;
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		ts_fakegw_start(&g, refused[i].fake_args);
		snprintf(gw, sizeof(gw), "  base_url: %s\n", g.base_url);
		assert_int_equal(check_config(yaml_with(gw, ""), out, sizeof(out)), 2);
		if (strncmp(out, refused[i].want, strlen(refused[i].want)) != 0)
			fail_msg("'%s' does not start with '%s'", out, refused[i].want);
		assert_true(strchr(out, '\n') == out + strlen(out) - 1);
		assert_null(strstr(out, "SECRETKEY42"));
		assert_null(strstr(out, "configuration ok"));
		ts_fakegw_stop(&g);
	}
	assert_int_equal(
	    check_config(yaml_with("  base_url: http://127.0.0.1:9/v2\n", ""), out, sizeof(out)),
	    0);
	assert_non_null(strstr(out, "billingd: warning: could not prove gateway.mch_id and the "
	                            "merchant key: "));
	assert_non_null(strstr(out, "configuration ok"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defaults_and_values),
	    cmocka_unit_test(test_env_overrides),
	    cmocka_unit_test(test_env_key_taken_once),
	    cmocka_unit_test(test_gateway_https),
	    cmocka_unit_test(test_example_loads),
	    cmocka_unit_test(test_unknown_key),
	    cmocka_unit_test(test_wrong_type),
	    cmocka_unit_test(test_missing_required),
	    cmocka_unit_test(test_malformed_yaml),
	    cmocka_unit_test(test_key_file_permissions),
	    cmocka_unit_test(test_key_file_length),
	    cmocka_unit_test(test_events_settings),
	    cmocka_unit_test(test_billingd_check_config),
	    cmocka_unit_test(test_billingd_check_config_proves_key),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
