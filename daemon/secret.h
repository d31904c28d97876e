/* secret.h: the secrets (the merchant key, the events secret), read from a
 * file or taken out of the environment by one rule. Errors say why, never
 * the value. */
#ifndef SECRET_H
#define SECRET_H

#include <stddef.h>

/* Reads the one-line secret in the file at path into out[cap]: opened once
 * and checked through that descriptor with fstat (a regular file that group
 * and others cannot read, shorter than cap), a final newline dropped, the
 * buffers wiped. 0, or -1 with why filled. */
int secret_read_file(const char *path, char *out, size_t cap, char *why, size_t whylen);

/* Takes the environment variable name into store[cap]: its bytes are wiped
 * and it is removed, so that neither /proc/PID/environ nor a child sees it.
 * store keeps it for the process (a reload still has it); unset, store is
 * left as it is. 0, or -1 with why filled when it does not fit. */
int secret_take_env(const char *name, char *store, size_t cap, char *why, size_t whylen);

#endif
