/* fuzz.h: what the libFuzzer targets share. */
#ifndef FUZZ_H
#define FUZZ_H

#include <stddef.h>
#include <stdint.h>

/* Writes data to a file of this process named for suffix ("plan.yaml") and
 * returns its path (static buffer): the loaders under test read files. */
const char *fuzz_file(const char *suffix, const uint8_t *data, size_t size);

/* data as a NUL-terminated string (malloc'd; NULs inside are kept, so the
 * string may look shorter than size). */
char *fuzz_str(const uint8_t *data, size_t size);

#endif
