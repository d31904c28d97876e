/* fuzz_sign.c: sign_compute against an implementation of the gateway's rule
 * written here from its description, not from sign.c: leave out "sign" and
 * empty values; sort by key ignoring ASCII case (then by the bytes, so that
 * the order is total); join key=value with '&'; append "&key=" and the
 * merchant key; MD5; uppercase hex.
 *
 * Input: the merchant key, then fields, each "key\x01value", separated by
 * \x02 (the first \x02 ends the key). Fields whose key repeats are dropped:
 * the parsers refuse them. */
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>

#include "fuzz.h"
#include "sign.h"

#define MAXF 40

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int lower(int c)
{
	return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

static int key_before(const char *a, const char *b)
{
	const unsigned char *x = (const unsigned char *)a, *y = (const unsigned char *)b;

	for (; *x && lower(*x) == lower(*y); x++, y++)
		;
	if (lower(*x) != lower(*y))
		return lower(*x) < lower(*y);
	return strcmp(a, b) < 0;
}

/* The rule, with its own canonical string and a one-shot digest. */
static void reference(struct sign_kv *kv, int n, const char *key, char out[33])
{
	struct sign_kv use[MAXF];
	int m = 0;
	size_t len = strlen("key=") + strlen(key) + 1;
	char *s, *o;
	unsigned char md[EVP_MAX_MD_SIZE];
	size_t mdlen = 0;

	for (int i = 0; i < n; i++) {
		if (!kv[i].value[0] || strcmp(kv[i].key, "sign") == 0)
			continue;
		/* insertion sort */
		int j = m++;
		for (; j > 0 && key_before(kv[i].key, use[j - 1].key); j--)
			use[j] = use[j - 1];
		use[j] = kv[i];
		len += strlen(kv[i].key) + strlen(kv[i].value) + 2;
	}
	s = o = malloc(len);
	if (!s)
		abort();
	for (int i = 0; i < m; i++) {
		o = stpcpy(stpcpy(stpcpy(o, use[i].key), "="), use[i].value);
		*o++ = '&';
	}
	stpcpy(stpcpy(o, "key="), key);
	if (!EVP_Q_digest(NULL, "MD5", NULL, s, strlen(s), md, &mdlen) || mdlen != 16)
		abort();
	free(s);
	for (int i = 0; i < 16; i++) {
		out[2 * i] = "0123456789ABCDEF"[md[i] >> 4];
		out[2 * i + 1] = "0123456789ABCDEF"[md[i] & 15];
	}
	out[32] = '\0';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = fuzz_str(data, size), *p, *key;
	struct sign_kv kv[MAXF];
	int n = 0;
	char got[33], want[33];

	key = text;
	p = strchr(text, '\x02');
	if (p)
		*p++ = '\0';
	while (p && n < MAXF) {
		char *next = strchr(p, '\x02'), *v;
		int dup = 0;

		if (next)
			*next++ = '\0';
		v = strchr(p, '\x01');
		if (v)
			*v++ = '\0';
		for (int i = 0; i < n; i++)
			dup |= strcmp(kv[i].key, p) == 0;
		if (!dup) {
			kv[n].key = p;
			kv[n++].value = v ? v : "";
		}
		p = next;
	}
	sign_compute(kv, (size_t)n, key, got);
	reference(kv, n, key, want);
	if (strcmp(got, want) != 0)
		abort();
	if (sign_verify(kv, (size_t)n, key, want) != 1)
		abort();
	free(text);
	return 0;
}
