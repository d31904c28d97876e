/* plans.c: plan files loaded with libyaml's document API (so every error can
 * name the line of the offending node) and validated; plans_store.c keeps
 * them in the database. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "log.h"
#include "plans.h"

static const char *const exhausted_names[] = {"past_due", "cancel", "pause"};

enum key { K_CODE, K_NAME, K_AMOUNT, K_CURRENCY, K_INTERVAL, K_COUNT, K_TRIAL, K_CYCLES, K_RETRY };
static const char *const keys[] = {"code",           "name",       "amount", "currency", "interval",
                                   "interval_count", "trial_days", "cycles", "retry"};
#define NKEYS (int)(sizeof(keys) / sizeof(keys[0]))
#define REQUIRED                                                                                   \
	(1u << K_CODE | 1u << K_NAME | 1u << K_AMOUNT | 1u << K_CURRENCY | 1u << K_INTERVAL |      \
	 1u << K_COUNT)

/* One plan file being read. */
struct parse {
	const char *path;
	yaml_document_t doc;
	char *err;
	size_t errlen;
};

static unsigned long line_of(const yaml_node_t *n)
{
	return (unsigned long)n->start_mark.line + 1;
}

/* "path:line: key: message"; returns -1. */
static int bad(struct parse *x, const yaml_node_t *n, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int bad(struct parse *x, const yaml_node_t *n, const char *key, const char *fmt, ...)
{
	char msg[256], path[512], name[64];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* the file's name and a key from it: echoed on one line */
	log_escape(path, sizeof(path), x->path);
	log_escape(name, sizeof(name), key);
	snprintf(x->err, x->errlen, "%s:%lu: %s: %s", path, line_of(n), name, msg);
	return -1;
}

/* "key: must be <want>, got <what the file has>"; returns -1. */
static int bad_value(struct parse *x, const yaml_node_t *v, const char *key, const char *want)
{
	char shown[41]; /* the value echoed on the error's one line */

	if (v->type == YAML_SEQUENCE_NODE)
		return bad(x, v, key, "must be %s, got a list", want);
	if (v->type == YAML_MAPPING_NODE)
		return bad(x, v, key, "must be %s, got a mapping", want);
	log_escape(shown, sizeof(shown), (const char *)v->data.scalar.value);
	if (v->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return bad(x, v, key, "must be %s, got the quoted string \"%s\"", want, shown);
	return bad(x, v, key, "must be %s, got '%s'", want, shown);
}

static const char *scalar(const yaml_node_t *n)
{
	return n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

/* An unquoted decimal integer within [min, max]; 0 / -1. */
static int int_value(const yaml_node_t *n, long long min, long long max, long long *v)
{
	const char *s = scalar(n);
	const char *digits = s && *s == '-' ? s + 1 : s;
	char *end;

	if (!s || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE ||
	    !isdigit((unsigned char)*digits))
		return -1;
	errno = 0;
	*v = strtoll(s, &end, 10);
	return errno || *end || *v < min || *v > max ? -1 : 0;
}

/* An integer from min to max into *out; 0, or -1 saying what was wanted. */
static int int_field(struct parse *x, const yaml_node_t *v, const char *key, long long min,
                     long long max, const char *want, int *out)
{
	long long i;

	if (int_value(v, min, max, &i) < 0)
		return bad_value(x, v, key, want);
	*out = (int)i;
	return 0;
}

static int valid_code(const char *s)
{
	size_t n = strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_-");

	return n >= 1 && n <= 40 && s[n] == '\0';
}

static int valid_name(const char *s)
{
	if (!s || !*s || strlen(s) >= sizeof(((struct plan *)0)->name))
		return 0;
	for (; *s; s++)
		if (iscntrl((unsigned char)*s))
			return 0;
	return 1;
}

int plans_exhausted_parse(const char *s, enum plan_exhausted *e)
{
	for (int i = PLAN_PAST_DUE; s && i <= PLAN_PAUSE; i++) {
		if (strcmp(s, exhausted_names[i]) == 0) {
			*e = (enum plan_exhausted)i;
			return 0;
		}
	}
	return -1;
}

static int parse_schedule(struct parse *x, yaml_node_t *v, struct plan *p)
{
	yaml_node_item_t *it;

	if (v->type != YAML_SEQUENCE_NODE)
		return bad_value(x, v, "retry.schedule",
		                 "a list of durations such as [1d, 3d, 7d]");
	if (v->data.sequence.items.top - v->data.sequence.items.start > PLAN_MAX_RETRY)
		return bad(x, v, "retry.schedule", "at most %d retries", PLAN_MAX_RETRY);
	p->nretry = 0;
	for (it = v->data.sequence.items.start; it < v->data.sequence.items.top; it++) {
		yaml_node_t *d = yaml_document_get_node(&x->doc, *it);
		const char *s = scalar(d);

		if (!s || cal_parse_duration(s, &p->retry[p->nretry]) < 0)
			return bad_value(x, d, "retry.schedule",
			                 "durations such as 1d, 3d, 2w or 12h");
		p->nretry++;
	}
	return 0;
}

static int parse_retry(struct parse *x, yaml_node_t *v, struct plan *p)
{
	yaml_node_pair_t *pr;
	int seen_schedule = 0, seen_exhausted = 0;

	if (v->type != YAML_MAPPING_NODE)
		return bad_value(x, v, "retry", "a mapping with schedule and on_exhausted");
	for (pr = v->data.mapping.pairs.start; pr < v->data.mapping.pairs.top; pr++) {
		yaml_node_t *k = yaml_document_get_node(&x->doc, pr->key);
		yaml_node_t *val = yaml_document_get_node(&x->doc, pr->value);
		const char *name = scalar(k);

		if (name && strcmp(name, "schedule") == 0) {
			if (seen_schedule++)
				return bad(x, k, "retry.schedule", "duplicate key");
			if (parse_schedule(x, val, p) < 0)
				return -1;
		} else if (name && strcmp(name, "on_exhausted") == 0) {
			if (seen_exhausted++)
				return bad(x, k, "retry.on_exhausted", "duplicate key");
			if (plans_exhausted_parse(scalar(val), &p->on_exhausted) < 0)
				return bad_value(x, val, "retry.on_exhausted",
				                 "cancel, past_due or pause");
		} else {
			return bad(x, k, "retry",
			           "unknown key '%.40s' (expected schedule, on_exhausted)",
			           name ? name : "?");
		}
	}
	return 0;
}

static int parse_field(struct parse *x, enum key k, yaml_node_t *v, struct plan *p)
{
	const char *s = scalar(v);
	long long i;

	switch (k) {
	case K_CODE:
		if (!s || !valid_code(s))
			return bad_value(x, v, keys[k], "1 to 40 characters of a-z, 0-9, _ and -");
		snprintf(p->code, sizeof(p->code), "%s", s);
		return 0;
	case K_NAME:
		if (!valid_name(s))
			return bad_value(x, v, keys[k], "one line of 1 to 127 bytes");
		snprintf(p->name, sizeof(p->name), "%s", s);
		return 0;
	case K_AMOUNT:
		/* The gateway's amount is 32-bit: a larger one is refused at every attempt. */
		if (int_value(v, 1, INT32_MAX, &i) < 0)
			return bad_value(x, v, keys[k],
			                 "a positive integer (cents) up to 2147483647");
		p->amount = i;
		return 0;
	case K_CURRENCY:
		if (!s || strcmp(s, "CAD") != 0)
			return bad_value(x, v, keys[k], "CAD (the only currency of the gateway)");
		return 0;
	case K_INTERVAL:
		if (!s || cal_unit_parse(s, &p->interval) < 0)
			return bad_value(x, v, keys[k], "day, week, month or year");
		return 0;
	case K_COUNT:
		return int_field(x, v, keys[k], 1, 1000, "an integer from 1 to 1000",
		                 &p->interval_count);
	case K_TRIAL:
		return int_field(x, v, keys[k], 0, 3650, "an integer from 0 to 3650 (days)",
		                 &p->trial_days);
	case K_CYCLES:
		return int_field(x, v, keys[k], 1, 100000,
		                 "a positive integer (number of payments)", &p->cycles);
	case K_RETRY:
		return parse_retry(x, v, p);
	}
	return -1;
}

/* The document's root mapping into p; *code_line: the line of the code key. */
static int parse_root(struct parse *x, struct plan *p, unsigned long *code_line)
{
	yaml_node_t *root = yaml_document_get_root_node(&x->doc);
	yaml_node_pair_t *pr;
	unsigned seen = 0;

	memset(p, 0, sizeof(*p));
	if (!root) {
		snprintf(x->err, x->errlen, "%s:1: empty file: expected the keys of a plan",
		         x->path);
		return -1;
	}
	if (root->type != YAML_MAPPING_NODE)
		return bad(x, root, "plan", "expected a mapping of keys (code, name, amount, ...)");
	for (pr = root->data.mapping.pairs.start; pr < root->data.mapping.pairs.top; pr++) {
		yaml_node_t *k = yaml_document_get_node(&x->doc, pr->key);
		const char *name = scalar(k);
		int i;

		for (i = 0; name && i < NKEYS && strcmp(name, keys[i]) != 0; i++)
			;
		if (!name || i == NKEYS)
			return bad(x, k, name ? name : "?",
			           "unknown key (expected code, name, amount, currency, interval, "
			           "interval_count, trial_days, cycles, retry)");
		if (seen & 1u << i)
			return bad(x, k, keys[i], "duplicate key");
		seen |= 1u << i;
		if (i == K_CODE)
			*code_line = line_of(k);
		if (parse_field(x, (enum key)i, yaml_document_get_node(&x->doc, pr->value), p) < 0)
			return -1;
	}
	for (int i = 0; i < NKEYS; i++)
		if ((REQUIRED & 1u << i) && !(seen & 1u << i))
			return bad(x, root, keys[i], "missing required key");
	return 0;
}

static int yaml_error(struct parse *x, const yaml_parser_t *ps)
{
	snprintf(x->err, x->errlen, "%s:%lu: malformed YAML: %s%s%s%s", x->path,
	         (unsigned long)ps->problem_mark.line + 1,
	         ps->problem ? ps->problem : "parse error", ps->context ? " (" : "",
	         ps->context ? ps->context : "", ps->context ? ")" : "");
	return -1;
}

/* A second document in the file ("---") is refused rather than ignored. */
static int single_document(struct parse *x, yaml_parser_t *ps)
{
	yaml_document_t more;
	yaml_node_t *root;
	int rc = 0;

	if (!yaml_parser_load(ps, &more))
		return yaml_error(x, ps);
	root = yaml_document_get_root_node(&more);
	if (root)
		rc = bad(x, root, "plan", "one YAML document per plan file");
	yaml_document_delete(&more);
	return rc;
}

/* Reads and validates path, without the file name check. */
static int parse_file(const char *path, struct plan *p, unsigned long *code_line, char *err,
                      size_t errlen)
{
	struct parse x = {.path = path, .err = err, .errlen = errlen};
	yaml_parser_t ps;
	FILE *f = fopen(path, "rb");
	int rc;

	if (!f) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	yaml_parser_initialize(&ps);
	yaml_parser_set_input_file(&ps, f);
	if (!yaml_parser_load(&ps, &x.doc)) {
		rc = yaml_error(&x, &ps);
	} else {
		rc = parse_root(&x, p, code_line);
		if (rc == 0)
			rc = single_document(&x, &ps);
		yaml_document_delete(&x.doc);
	}
	yaml_parser_delete(&ps);
	fclose(f);
	return rc;
}

static int check_file_name(const char *path, const struct plan *p, unsigned long code_line,
                           char *err, size_t errlen)
{
	const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
	size_t len = strlen(base), code_len = strlen(p->code);

	if (len == code_len + 5 && strncmp(base, p->code, code_len) == 0 &&
	    strcmp(base + code_len, ".yaml") == 0)
		return 0;
	snprintf(err, errlen, "%s:%lu: code: '%s' does not match the file name (expected %s.yaml)",
	         path, code_line, p->code, p->code);
	return -1;
}

int plans_load_file(const char *path, struct plan *p, char *err, size_t errlen)
{
	unsigned long code_line = 1;

	if (parse_file(path, p, &code_line, err, errlen) < 0)
		return -1;
	return check_file_name(path, p, code_line, err, errlen);
}

/* A plan file of a directory being loaded. */
struct entry {
	struct plan p;
	char path[1024];
	unsigned long code_line;
};

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_entry(const void *a, const void *b)
{
	const struct entry *x = a, *y = b;
	int c = strcmp(x->p.code, y->p.code);

	return c ? c : strcmp(x->path, y->path);
}

static int is_plan_file(const char *name)
{
	size_t len = strlen(name);

	return name[0] != '.' && len > 5 && strcmp(name + len - 5, ".yaml") == 0;
}

/* The plan file names of dir, sorted (malloc'd, each name too). */
static int list_files(const char *dir, char ***names, int *n, char *err, size_t errlen)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int cap = 0;

	*names = NULL;
	*n = 0;
	if (!d) {
		snprintf(err, errlen, "plans directory '%s': %s", dir, strerror(errno));
		return -1;
	}
	while ((de = readdir(d))) {
		if (!is_plan_file(de->d_name))
			continue;
		if (*n == cap) {
			char **more =
			    realloc(*names, (size_t)(cap = cap ? 2 * cap : 16) * sizeof(char *));

			if (!more)
				break;
			*names = more;
		}
		if (!((*names)[*n] = strdup(de->d_name)))
			break;
		(*n)++;
	}
	closedir(d);
	if (de) {
		snprintf(err, errlen, "plans directory '%s': out of memory", dir);
		return -1;
	}
	if (*n)
		qsort(*names, (size_t)*n, sizeof(char *), cmp_str);
	return 0;
}

/* Loads the files (in name order, so that the first error is always the same
 * one), then refuses duplicate codes before the file name check: two files
 * with one code are better explained by naming both. */
static int load_entries(const char *dir, char **names, struct entry *e, int n, char *err,
                        size_t errlen)
{
	for (int i = 0; i < n; i++) {
		if ((size_t)snprintf(e[i].path, sizeof(e[i].path), "%s/%s", dir, names[i]) >=
		    sizeof(e[i].path)) {
			snprintf(err, errlen, "%s/%s: path too long", dir, names[i]);
			return -1;
		}
		e[i].code_line = 1;
		if (parse_file(e[i].path, &e[i].p, &e[i].code_line, err, errlen) < 0)
			return -1;
	}
	qsort(e, (size_t)n, sizeof(*e), cmp_entry);
	for (int i = 1; i < n; i++) {
		if (strcmp(e[i].p.code, e[i - 1].p.code) == 0) {
			snprintf(err, errlen, "%s:%lu: code: '%s' is also the code of %s",
			         e[i].path, e[i].code_line, e[i].p.code, e[i - 1].path);
			return -1;
		}
	}
	for (int i = 0; i < n; i++)
		if (check_file_name(e[i].path, &e[i].p, e[i].code_line, err, errlen) < 0)
			return -1;
	return 0;
}

int plans_load_dir(const char *dir, struct plan **out, int *n, char *err, size_t errlen)
{
	char **names;
	struct entry *e = NULL;
	int count = 0, rc = -1;

	*out = NULL;
	*n = 0;
	if (list_files(dir, &names, &count, err, errlen) < 0)
		goto done;
	e = calloc((size_t)count + 1, sizeof(*e));
	*out = calloc((size_t)count + 1, sizeof(**out));
	if (!e || !*out) {
		snprintf(err, errlen, "plans directory '%s': out of memory", dir);
		goto done;
	}
	if (load_entries(dir, names, e, count, err, errlen) < 0)
		goto done;
	for (int i = 0; i < count; i++)
		(*out)[i] = e[i].p;
	*n = count;
	rc = 0;
done:
	for (int i = 0; i < count; i++)
		free(names[i]);
	free(names);
	free(e);
	if (rc < 0) {
		free(*out);
		*out = NULL;
	}
	return rc;
}

void plans_retry_format(const struct plan *p, char *buf, size_t len)
{
	size_t used = 0;

	buf[0] = '\0';
	for (int i = 0; i < p->nretry && used < len; i++) {
		char d[16];

		cal_format_duration(p->retry[i], d, sizeof(d));
		used += (size_t)snprintf(buf + used, len - used, "%s%s", i ? "," : "", d);
	}
}

const char *plans_exhausted_name(enum plan_exhausted e)
{
	return e >= PLAN_PAST_DUE && e <= PLAN_PAUSE ? exhausted_names[e] : "?";
}
