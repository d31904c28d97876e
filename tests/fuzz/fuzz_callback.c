/* fuzz_callback.c: the signed messages the gateway sends us (the notify's
 * JSON body, the return URL's query string), parsed and verified as the
 * listener does. First byte: 0 query, 1 JSON. Checks that a parsed message
 * re-encoded parses to the same fields, that it verifies exactly when its
 * sign is the signature of its other fields, and that one changed digit of
 * the signature fails. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "gateway.h"
#include "sign.h"

#define KEY "TESTKEY0123456789abcdef"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* f as a query string with every byte but [A-Za-z0-9] %-escaped. */
static char *encode(const struct gw_fields *f)
{
	size_t need = 1;
	char *q, *o;

	for (int i = 0; i < f->n; i++)
		need += 3 * (strlen(f->kv[i].key) + strlen(f->kv[i].value)) + 2;
	q = o = malloc(need);
	if (!q)
		abort();
	*o = '\0';
	for (int i = 0; i < f->n; i++) {
		const char *parts[2] = {f->kv[i].key, f->kv[i].value};

		if (i)
			*o++ = '&';
		for (int p = 0; p < 2; p++) {
			if (p)
				*o++ = '=';
			for (const unsigned char *s = (const unsigned char *)parts[p]; *s; s++) {
				if ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
				    (*s >= '0' && *s <= '9'))
					*o++ = (char)*s;
				else
					o += sprintf(o, "%%%02X", *s);
			}
		}
	}
	*o = '\0';
	return q;
}

static void same_fields(const struct gw_fields *a, const struct gw_fields *b)
{
	if (a->n != b->n)
		abort();
	for (int i = 0; i < a->n; i++)
		if (strcmp(a->kv[i].key, b->kv[i].key) || strcmp(a->kv[i].value, b->kv[i].value))
			abort();
}

static void check_signature(const struct gw_fields *f)
{
	struct gw_fields g = {.n = 0};
	char sig[33];
	const char *given = gw_fields_get(f, "sign");
	int verified = gw_fields_verify(f, KEY);

	sign_compute(f->kv, (size_t)f->n, KEY, sig);
	if (verified != (given && strcmp(given, sig) == 0))
		abort();
	/* the same fields with the right signature (added or replaced) */
	for (int i = 0; i < f->n; i++)
		if (strcmp(f->kv[i].key, "sign") != 0)
			g.kv[g.n++] = f->kv[i];
	if (g.n == GW_MAX_FIELDS)
		return;
	g.kv[g.n].key = "sign";
	g.kv[g.n++].value = sig;
	if (gw_fields_verify(&g, KEY) != 1)
		abort();
	sig[7] = sig[7] == '0' ? '1' : '0';
	if (gw_fields_verify(&g, KEY) != 0)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct gw_fields f, again;
	char err[256];
	char *text, *q;
	int rc;

	if (size < 1)
		return 0;
	text = fuzz_str(data + 1, size - 1);
	rc = data[0] & 1 ? gw_fields_from_json(text, size - 1, &f, err, sizeof(err))
	                 : gw_fields_from_query(text, &f, err, sizeof(err));
	free(text);
	if (rc < 0) {
		if (!err[0] || strchr(err, '\n'))
			abort();
		return 0;
	}
	if (f.n > GW_MAX_FIELDS)
		abort();
	check_signature(&f);
	q = encode(&f);
	if (strlen(q) <= GW_MAX_INPUT) {
		if (gw_fields_from_query(q, &again, err, sizeof(err)) < 0)
			abort();
		same_fields(&f, &again);
		gw_fields_free(&again);
	}
	free(q);
	gw_fields_free(&f);
	return 0;
}
