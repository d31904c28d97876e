/* config.c: billing.yaml -> struct cfg.
 *
 * The file is a mapping of sections (gateway, database, billing, listen,
 * admin, enrolment) to mappings of scalars, plus the top-level scalar plans_dir.
 * Every key is known in one table below: its type, where it goes, and
 * whether it is required. Errors name the file, the line and the key. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <strings.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <openssl/crypto.h>
#include <yaml.h>

#include "config.h"
#include "log.h"
#include "secret.h"

enum kind { K_STR, K_INT, K_URL, K_BOOL, K_LIST }; /* K_LIST: a sequence, kept comma-joined */

struct key {
	const char *name; /* "gateway.timeout_ms" */
	enum kind kind;
	size_t off;
	size_t size; /* string capacity, or 0 for long/int fields */
	long min, max;
	int is_int; /* an int field (not long) */
};

#define S(n, f, k)                                                                                 \
	{                                                                                          \
		n, k, offsetof(struct cfg, f), sizeof(((struct cfg *)0)->f), 0, 0, 0               \
	}
#define L(n, f, lo, hi)                                                                            \
	{                                                                                          \
		n, K_INT, offsetof(struct cfg, f), 0, lo, hi, 0                                    \
	}
#define I(n, f, lo, hi)                                                                            \
	{                                                                                          \
		n, K_INT, offsetof(struct cfg, f), 0, lo, hi, 1                                    \
	}

#define B(n, f)                                                                                    \
	{                                                                                          \
		n, K_BOOL, offsetof(struct cfg, f), 0, 0, 1, 1                                     \
	}

static const struct key keys[] = {
    S("gateway.base_url", gateway.base_url, K_URL),
    S("gateway.mch_id", gateway.mch_id, K_STR),
    S("gateway.job_no", gateway.job_no, K_STR),
    S("gateway.merchant_key_file", gateway.merchant_key_file, K_STR),
    L("gateway.timeout_ms", gateway.timeout_ms, 100, 600000),
    L("gateway.connect_timeout_ms", gateway.connect_timeout_ms, 50, 600000),
    S("gateway.ca_file", gateway.ca_file, K_STR),
    B("gateway.allow_insecure_http", gateway.allow_insecure_http),
    I("gateway.max_in_flight", gateway.max_in_flight, 1, 1024),
    S("database.url", database_url, K_STR),
    S("billing.timezone", timezone, K_STR),
    S("billing.order_prefix", order_prefix, K_STR),
    I("billing.lease_seconds", lease_seconds, 5, 86400),
    I("billing.batch_size", batch_size, 1, 10000),
    L("billing.poll_interval_ms", poll_interval_ms, 10, 3600000),
    S("listen.address", listen_address, K_STR),
    S("admin.address", admin_address, K_STR),
    S("enrolment.return_url", return_url, K_URL),
    S("enrolment.success_url", success_url, K_URL),
    S("enrolment.failure_url", failure_url, K_URL),
    I("enrolment.expiry_hours", enrolment_expiry_hours, 1, 8760),
    S("plans_dir", plans_dir, K_STR),
    S("events.url", events.url, K_URL),
    S("events.secret_file", events.secret_file, K_STR),
    L("events.timeout_ms", events.timeout_ms, 100, 600000),
    I("events.max_in_flight", events.max_in_flight, 1, 1024),
    S("events.retry", events.retry_text, K_LIST),
    I("events.card_expiring_days", events.card_expiring_days, 1, 365),
};

void cfg_defaults(struct cfg *c)
{
	memset(c, 0, sizeof(*c));
	snprintf(c->gateway.base_url, sizeof(c->gateway.base_url),
	         "https://api.iotpaycloud.com/v2");
	c->gateway.timeout_ms = 30000;
	c->gateway.connect_timeout_ms = 5000;
	c->gateway.max_in_flight = 64;
	snprintf(c->timezone, sizeof(c->timezone), "UTC");
	snprintf(c->order_prefix, sizeof(c->order_prefix), "BD");
	c->lease_seconds = 120;
	c->batch_size = 256;
	c->poll_interval_ms = 1000;
	snprintf(c->listen_address, sizeof(c->listen_address), "127.0.0.1:8080");
	snprintf(c->admin_address, sizeof(c->admin_address), "127.0.0.1:9187");
	snprintf(c->return_url, sizeof(c->return_url), "http://127.0.0.1:8080/iotpay/return");
	c->enrolment_expiry_hours = 72;
	snprintf(c->plans_dir, sizeof(c->plans_dir), "plans");
	c->events.timeout_ms = 10000;
	c->events.max_in_flight = 8;
	snprintf(c->events.retry_text, sizeof(c->events.retry_text),
	         "30s,2m,10m,1h,6h,12h,24h,24h");
	c->events.card_expiring_days = 30;
}

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -1;
}

static const struct key *find_key(const char *name)
{
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (strcmp(keys[i].name, name) == 0)
			return &keys[i];
	return NULL;
}

static int set_value(struct cfg *c, const struct key *k, const char *v, const char *file,
                     unsigned long line, char *err, size_t errlen)
{
	char *p = (char *)c + k->off;

	if (k->kind == K_BOOL) {
		if (strcmp(v, "true") != 0 && strcmp(v, "false") != 0)
			return fail(err, errlen, "%s:%lu: %s: expected true or false", file, line,
			            k->name);
		*(int *)p = strcmp(v, "true") == 0;
		return 0;
	}
	if (k->kind == K_INT) {
		char *end;
		long n;

		errno = 0;
		n = strtol(v, &end, 10);
		if (!v[0] || *end || errno)
			return fail(err, errlen, "%s:%lu: %s: expected an integer", file, line,
			            k->name);
		if (n < k->min || n > k->max)
			return fail(err, errlen, "%s:%lu: %s: must be between %ld and %ld", file,
			            line, k->name, k->min, k->max);
		if (k->is_int)
			*(int *)p = (int)n;
		else
			*(long *)p = n;
		return 0;
	}
	if (strlen(v) >= k->size)
		return fail(err, errlen, "%s:%lu: %s: longer than %zu characters", file, line,
		            k->name, k->size - 1);
	if (k->kind == K_URL && v[0] && strncmp(v, "http://", 7) != 0 &&
	    strncmp(v, "https://", 8) != 0)
		return fail(err, errlen, "%s:%lu: %s: expected an http:// or https:// URL", file,
		            line, k->name);
	snprintf(p, k->size, "%s", v);
	return 0;
}

/* A sequence of scalars, comma-joined into the key's string. */
static int set_list(struct cfg *c, const struct key *k, yaml_document_t *doc, yaml_node_t *seq,
                    const char *file, char *err, size_t errlen)
{
	char joined[CFG_STR] = "";
	size_t len = 0;

	for (yaml_node_item_t *it = seq->data.sequence.items.start;
	     it < seq->data.sequence.items.top; it++) {
		yaml_node_t *vn = yaml_document_get_node(doc, *it);
		int n;

		if (vn->type != YAML_SCALAR_NODE)
			return fail(err, errlen, "%s:%lu: %s: expected a list of strings", file,
			            (unsigned long)vn->start_mark.line + 1, k->name);
		n = snprintf(joined + len, sizeof(joined) - len, "%s%s", len ? "," : "",
		             (const char *)vn->data.scalar.value);
		if (n < 0 || (size_t)n >= sizeof(joined) - len)
			return fail(err, errlen, "%s:%lu: %s: too long", file,
			            (unsigned long)seq->start_mark.line + 1, k->name);
		len += (size_t)n;
	}
	return set_value(c, k, joined, file, seq->start_mark.line + 1, err, errlen);
}

static int load_mapping(struct cfg *c, yaml_document_t *doc, yaml_node_t *map, const char *section,
                        const char *file, char *err, size_t errlen)
{
	for (yaml_node_pair_t *pr = map->data.mapping.pairs.start; pr < map->data.mapping.pairs.top;
	     pr++) {
		yaml_node_t *kn = yaml_document_get_node(doc, pr->key);
		yaml_node_t *vn = yaml_document_get_node(doc, pr->value);
		unsigned long line = kn->start_mark.line + 1;
		char name[128], shown[128]; /* shown: name escaped for the error's one line */
		const struct key *k;

		if (kn->type != YAML_SCALAR_NODE)
			return fail(err, errlen, "%s:%lu: expected a key", file, line);
		snprintf(name, sizeof(name), "%s%s%s", section ? section : "", section ? "." : "",
		         (const char *)kn->data.scalar.value);
		k = find_key(name);
		if (!section && !k && vn->type == YAML_MAPPING_NODE) {
			int known = 0;
			for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
				known |= strncmp(keys[i].name, name, strlen(name)) == 0 &&
				         keys[i].name[strlen(name)] == '.';
			if (!known) {
				log_escape(shown, sizeof(shown), name);
				return fail(err, errlen, "%s:%lu: %s: unknown section", file, line,
				            shown);
			}
			if (load_mapping(c, doc, vn, name, file, err, errlen) < 0)
				return -1;
			continue;
		}
		if (!k) {
			log_escape(shown, sizeof(shown), name);
			return fail(err, errlen, "%s:%lu: %s: unknown key", file, line, shown);
		}
		if (k->kind == K_LIST && vn->type == YAML_SEQUENCE_NODE) {
			if (set_list(c, k, doc, vn, file, err, errlen) < 0)
				return -1;
			continue;
		}
		if (vn->type != YAML_SCALAR_NODE)
			return fail(err, errlen, "%s:%lu: %s: expected %s", file, line, name,
			            k->kind == K_INT ? "an integer" : "a string");
		if (set_value(c, k, (const char *)vn->data.scalar.value, file,
		              vn->start_mark.line + 1, err, errlen) < 0)
			return -1;
	}
	return 0;
}

static int parse_file(struct cfg *c, const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	yaml_parser_t parser;
	yaml_document_t doc;
	yaml_node_t *root;
	int rc = 0;

	if (!f)
		return fail(err, errlen, "%s: %s", path, strerror(errno));
	yaml_parser_initialize(&parser);
	yaml_parser_set_input_file(&parser, f);
	if (!yaml_parser_load(&parser, &doc)) {
		rc = fail(err, errlen, "%s:%lu: %s", path,
		          (unsigned long)parser.problem_mark.line + 1,
		          parser.problem ? parser.problem : "invalid YAML");
		yaml_parser_delete(&parser);
		fclose(f);
		return rc;
	}
	root = yaml_document_get_root_node(&doc);
	if (root && root->type != YAML_MAPPING_NODE)
		rc = fail(err, errlen, "%s:%lu: expected a mapping of sections", path,
		          (unsigned long)root->start_mark.line + 1);
	else if (root)
		rc = load_mapping(c, &doc, root, NULL, path, err, errlen);
	yaml_document_delete(&doc);
	yaml_parser_delete(&parser);
	fclose(f);
	return rc;
}

/* A relative path in the file is relative to the file's directory, not to
 * the working directory (which is / under systemd). */
static int resolve_path(const struct cfg *c, char *field, size_t size, const char *key, char *err,
                        size_t errlen)
{
	const char *slash = strrchr(c->path, '/');
	char joined[CFG_STR];
	int n;

	if (!field[0] || field[0] == '/' || !slash)
		return 0;
	n = snprintf(joined, sizeof(joined), "%.*s/%s", (int)(slash - c->path), c->path, field);
	if (n < 0 || (size_t)n >= size || (size_t)n >= sizeof(joined))
		return fail(err, errlen, "%s: %s: longer than %zu characters once resolved",
		            c->path, key, size - 1);
	memcpy(field, joined, (size_t)n + 1);
	return 0;
}

static int resolve_paths(struct cfg *c, char *err, size_t errlen)
{
	if (resolve_path(c, c->plans_dir, sizeof(c->plans_dir), "plans_dir", err, errlen) < 0 ||
	    resolve_path(c, c->gateway.merchant_key_file, sizeof(c->gateway.merchant_key_file),
	                 "gateway.merchant_key_file", err, errlen) < 0 ||
	    resolve_path(c, c->gateway.ca_file, sizeof(c->gateway.ca_file), "gateway.ca_file", err,
	                 errlen) < 0 ||
	    resolve_path(c, c->events.secret_file, sizeof(c->events.secret_file),
	                 "events.secret_file", err, errlen) < 0)
		return -1;
	return 0;
}

const char *cfg_find_path(const char *given)
{
	const char *env = getenv("BILLING_CONFIG");
	struct stat st;

	if (given)
		return given;
	if (env && env[0])
		return env;
	if (stat("billing.yaml", &st) == 0)
		return "billing.yaml";
	return CFG_SYSTEM_PATH;
}

/* ---- events.* ---- */

/* "30s", "2m", "1h", "1d" -> seconds; -1 if malformed. */
static long retry_seconds(const char *s, size_t n)
{
	long v = 0;
	size_t i;

	for (i = 0; i < n && s[i] >= '0' && s[i] <= '9' && v < 1000000; i++)
		v = v * 10 + (s[i] - '0');
	if (i == 0 || v == 0 || i + 1 != n)
		return -1;
	switch (s[i]) {
	case 's':
		return v;
	case 'm':
		return v * 60;
	case 'h':
		return v * 3600;
	case 'd':
		return v * 86400;
	default:
		return -1;
	}
}

static int events_retry(struct cfg *c, char *err, size_t errlen)
{
	const char *s = c->events.retry_text;

	c->events.nretry = 0;
	while (*s) {
		size_t n;
		long v;

		s += strspn(s, " ,");
		n = strcspn(s, " ,");
		if (!n)
			break;
		v = retry_seconds(s, n);
		if (v < 0)
			return fail(err, errlen,
			            "%s: events.retry: '%.*s' is not a delay such as 30s, 2m, 1h "
			            "or 1d",
			            c->path, (int)(n > 40 ? 40 : n), s);
		if (c->events.nretry == CFG_EVENTS_MAX_RETRY)
			return fail(err, errlen, "%s: events.retry: at most %d delays", c->path,
			            CFG_EVENTS_MAX_RETRY);
		c->events.retry[c->events.nretry++] = v;
		s += n;
	}
	return 0;
}

/* The secret: env BILLING_EVENTS_SECRET (taken once, like the merchant
 * key), else events.secret_file; required once events.url is set. */
static char env_events_secret[sizeof(((struct cfg *)0)->events.secret)];

static int events_secret(struct cfg *c, char *err, size_t errlen)
{
	char why[128];

	if (secret_take_env("BILLING_EVENTS_SECRET", env_events_secret, sizeof(env_events_secret),
	                    why, sizeof(why)) < 0)
		return fail(err, errlen, "BILLING_EVENTS_SECRET: %s", why);
	if (env_events_secret[0])
		memcpy(c->events.secret, env_events_secret, sizeof(env_events_secret));
	else if (c->events.secret_file[0] &&
	         secret_read_file(c->events.secret_file, c->events.secret, sizeof(c->events.secret),
	                          why, sizeof(why)) < 0)
		return fail(err, errlen, "%s: events.secret_file: %s", c->path, why);
	if (c->events.url[0] && !c->events.secret[0])
		return fail(err, errlen,
		            "%s: events.secret_file: required with events.url (or env "
		            "BILLING_EVENTS_SECRET)",
		            c->path);
	return 0;
}
/* Whether an http:// URL's host is this machine: localhost, 127.0.0.0/8 as
 * a dotted quad, or [::1]. */
static int loopback_url(const char *url)
{
	const char *host = url + strlen("http://");
	size_t len;
	const char *at;
	char h[64];
	struct in_addr a4;
	struct in6_addr a6;

	if (strncmp(url, "http://", 7) != 0)
		return 0;
	len = strcspn(host, "/?#");
	at = memchr(host, '@', len);
	if (at) {
		len -= (size_t)(at + 1 - host);
		host = at + 1;
	}
	if (host[0] == '[') {
		const char *end = memchr(host, ']', len);

		if (!end || (end + 1 < host + len && end[1] != ':') ||
		    (size_t)(end - host - 1) >= sizeof(h))
			return 0;
		snprintf(h, sizeof(h), "%.*s", (int)(end - host - 1), host + 1);
		return inet_pton(AF_INET6, h, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
	}
	len = strcspn(host, ":/?#");
	if (len >= sizeof(h))
		return 0;
	snprintf(h, sizeof(h), "%.*s", (int)len, host);
	if (strcasecmp(h, "localhost") == 0)
		return 1;
	return inet_pton(AF_INET, h, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127;
}

/* Letters and digits, ending in a letter: order numbers are the prefix then
 * digits, so "S1" + "2-..." would be "S" + "12-...". */
static int check_prefix(const char *p)
{
	size_t n = strlen(p);

	if (n == 0 || !isalpha((unsigned char)p[n - 1]))
		return -1;
	for (; *p; p++)
		if (!isalnum((unsigned char)*p))
			return -1;
	return 0;
}

/* IOTPAY_MERCHANT_KEY, taken out of the environment at the first load and
 * kept for the process. */
static char env_key[sizeof(((struct cfg *)0)->gateway.merchant_key)];
static int load_key(struct cfg *c, char *err, size_t errlen)
{
	char why[128];

	if (secret_take_env("IOTPAY_MERCHANT_KEY", env_key, sizeof(env_key), why, sizeof(why)) < 0)
		return fail(err, errlen, "IOTPAY_MERCHANT_KEY: %s", why);
	if (env_key[0])
		memcpy(c->gateway.merchant_key, env_key, sizeof(env_key));
	else if (c->gateway.merchant_key_file[0] &&
	         secret_read_file(c->gateway.merchant_key_file, c->gateway.merchant_key,
	                          sizeof(c->gateway.merchant_key), why, sizeof(why)) < 0)
		/* the path is not echoed: a key pasted there by mistake would be */
		return fail(err, errlen, "%s: gateway.merchant_key_file: %s", c->path, why);
	if (!c->gateway.merchant_key[0])
		return fail(err, errlen,
		            "%s: gateway.merchant_key_file: required (or env IOTPAY_MERCHANT_KEY)",
		            c->path);
	return 0;
}

int cfg_load_key(struct cfg *c, char *err, size_t errlen)
{
	if (load_key(c, err, errlen) == 0)
		return 0;
	cfg_wipe(c);
	return -1;
}

int cfg_load(struct cfg *c, const char *path, char *err, size_t errlen)
{
	/* Only the daemon, which sends the events, reads their secret. */
	if (cfg_load_without_key(c, path, err, errlen) < 0 || cfg_load_key(c, err, errlen) < 0)
		return -1;
	return events_secret(c, err, errlen);
}

int cfg_load_without_key(struct cfg *c, const char *path, char *err, size_t errlen)
{
	const char *env;

	cfg_defaults(c);
	snprintf(c->path, sizeof(c->path), "%s", path);
	if (parse_file(c, path, err, errlen) < 0 || resolve_paths(c, err, errlen) < 0)
		return -1;
	if ((env = getenv("DATABASE_URL")) && env[0])
		snprintf(c->database_url, sizeof(c->database_url), "%s", env);
	/* The key's signatures and card tokens travel to the gateway. */
	if (strncmp(c->gateway.base_url, "https://", 8) != 0 && !c->gateway.allow_insecure_http &&
	    !loopback_url(c->gateway.base_url))
		return fail(err, errlen,
		            "%s: gateway.base_url: must be https:// unless the host is loopback or "
		            "gateway.allow_insecure_http is true",
		            path);
	if (!c->gateway.mch_id[0])
		return fail(err, errlen, "%s: gateway.mch_id: required", path);
	if (!c->gateway.job_no[0])
		return fail(err, errlen, "%s: gateway.job_no: required", path);
	if (!c->database_url[0])
		return fail(err, errlen, "%s: database.url: required (or env DATABASE_URL)", path);
	if (check_prefix(c->order_prefix) < 0)
		return fail(
		    err, errlen,
		    "%s: billing.order_prefix: 1 to 8 letters or digits, ending in a letter", path);
	if (events_retry(c, err, errlen) < 0)
		return -1;
	if (c->lease_seconds * 1000L < c->gateway.timeout_ms + 5000)
		return fail(err, errlen,
		            "%s: billing.lease_seconds: must exceed gateway.timeout_ms by 5 s or "
		            "more",
		            path);
	return cfg_apply_timezone(c, err, errlen);
}

void cfg_wipe(struct cfg *c)
{
	OPENSSL_cleanse(c->gateway.merchant_key, sizeof(c->gateway.merchant_key));
	OPENSSL_cleanse(c->events.secret, sizeof(c->events.secret));
}

int cfg_apply_timezone(const struct cfg *c, char *err, size_t errlen)
{
	char zone[128];
	struct stat st;

	/* glibc silently treats an unknown zone as UTC: check the zoneinfo file. */
	snprintf(zone, sizeof(zone), "/usr/share/zoneinfo/%s", c->timezone);
	if (strstr(c->timezone, "..") || stat(zone, &st) < 0 || !S_ISREG(st.st_mode)) {
		char shown[sizeof(c->timezone)];

		log_escape(shown, sizeof(shown), c->timezone);
		return fail(err, errlen, "%s: billing.timezone: unknown IANA timezone '%s'",
		            c->path, shown);
	}
	setenv("TZ", c->timezone, 1);
	tzset();
	return 0;
}
