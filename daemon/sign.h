/* sign.h: the gateway's MD5 message signature (docs/design.md, "The gateway"). */
#ifndef SIGN_H
#define SIGN_H

#include <stddef.h>

struct sign_kv {
	const char *key;
	const char *value;
};

/* Signs the fields: "sign" and empty values are left out, keys sorted
 * case-insensitively, joined k=v&k=v, "&key=<merchant key>" appended, MD5,
 * uppercase hex into out (33 bytes). */
void sign_compute(const struct sign_kv *kv, size_t n, const char *merchant_key, char out[33]);

/* 1 when sig is the signature of the fields, 0 otherwise (constant time). */
int sign_verify(const struct sign_kv *kv, size_t n, const char *merchant_key, const char *sig);

#endif
