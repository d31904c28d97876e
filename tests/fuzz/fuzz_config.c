/* fuzz_config.c: billing.yaml loading (cfg_load) on any bytes: no crash, no
 * leak, and an error is one line. The seeds name KEY_FILE, written at start,
 * so that loading goes past the key to the checks after it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config.h"
#include "fuzz.h"

#define KEY_FILE "/tmp/billingd-fuzz-merchant.key"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	FILE *f = fopen(KEY_FILE, "w");

	(void)argc;
	(void)argv;
	if (!f || fputs("TESTKEY0123456789abcdef\n", f) < 0 || fclose(f) != 0 ||
	    chmod(KEY_FILE, 0600) < 0)
		abort();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cfg c;
	char err[512] = "";

	if (cfg_load(&c, fuzz_file("billing.yaml", data, size), err, sizeof(err)) < 0 &&
	    (!err[0] || strchr(err, '\n')))
		abort();
	cfg_wipe(&c);
	return 0;
}
