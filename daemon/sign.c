/* sign.c: the gateway's MD5 message signature.
 *
 * Fields other than "sign" with non-empty values, sorted by key without
 * regard to case, joined "k=v&k=v", then "&key=<merchant key>", MD5, upper
 * hex. The same rule signs our requests and checks the gateway's messages. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "sign.h"

static int kv_cmp(const void *a, const void *b)
{
	const struct sign_kv *x = *(const struct sign_kv *const *)a;
	const struct sign_kv *y = *(const struct sign_kv *const *)b;
	int r = strcasecmp(x->key, y->key);
	return r ? r : strcmp(x->key, y->key);
}

static int signed_field(const struct sign_kv *kv)
{
	return kv->value && kv->value[0] && strcmp(kv->key, "sign") != 0;
}

void sign_compute(const struct sign_kv *kv, size_t n, const char *merchant_key, char out[33])
{
	const struct sign_kv *stack[64];
	const struct sign_kv **order = n <= 64 ? stack : malloc(n * sizeof(*order));
	size_t m = 0;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();

	out[0] = '\0';
	if (!order || !ctx)
		goto done;
	for (size_t i = 0; i < n; i++)
		if (signed_field(&kv[i]))
			order[m++] = &kv[i];
	qsort(order, m, sizeof(*order), kv_cmp);

	EVP_DigestInit_ex(ctx, EVP_md5(), NULL);
	for (size_t i = 0; i < m; i++) {
		EVP_DigestUpdate(ctx, order[i]->key, strlen(order[i]->key));
		EVP_DigestUpdate(ctx, "=", 1);
		EVP_DigestUpdate(ctx, order[i]->value, strlen(order[i]->value));
		EVP_DigestUpdate(ctx, "&", 1);
	}
	EVP_DigestUpdate(ctx, "key=", 4);
	EVP_DigestUpdate(ctx, merchant_key, strlen(merchant_key));
	EVP_DigestFinal_ex(ctx, md, &mdlen);
	for (unsigned int i = 0; i < mdlen && i < 16; i++) {
		out[2 * i] = "0123456789ABCDEF"[md[i] >> 4];
		out[2 * i + 1] = "0123456789ABCDEF"[md[i] & 15];
	}
	out[32] = '\0';
done:
	EVP_MD_CTX_free(ctx);
	if (order != stack)
		free(order);
}

int sign_verify(const struct sign_kv *kv, size_t n, const char *merchant_key, const char *sig)
{
	char want[33];

	if (!sig || strlen(sig) != 32)
		return 0;
	sign_compute(kv, n, merchant_key, want);
	if (!want[0])
		return 0;
	return CRYPTO_memcmp(want, sig, 32) == 0;
}
