/* fuzz_plans.c: plan file loading (plans_load_file) on any bytes: no crash,
 * no leak; an error is one line, and a plan loaded has values the gateway
 * accepts and that the calendar computes with (periods, retries) without
 * overflow (UBSan) or going backwards. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fuzz.h"
#include "plans.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	setenv("TZ", "America/Toronto", 1); /* DST: the calendar's hard case */
	tzset();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct plan p;
	char err[512] = "";
	int64_t anchor, prev, at;

	if (plans_load_file(fuzz_file("basic.yaml", data, size), &p, err, sizeof(err)) < 0) {
		if (!err[0] || strchr(err, '\n'))
			abort();
		return 0;
	}
	if (p.amount < 1 || p.amount > 2147483647 || !p.code[0] || strchr(p.name, '\n') ||
	    p.interval_count < 1 || p.trial_days < 0 || p.cycles < 0 || p.nretry < 0 ||
	    p.nretry > PLAN_MAX_RETRY)
		abort();
	/* 2026-03-02T12:00:00Z, a subscription's life of periods */
	anchor = plans_anchor(1772452800, p.trial_days);
	prev = anchor - 1;
	for (int n = 0; n < 3; n++) {
		int64_t t = plans_period_start(&p, anchor, n);

		if (t <= prev)
			abort();
		prev = t;
	}
	for (int k = 1; k <= p.nretry + 1; k++)
		if (plans_retry_at(&p, k, anchor, &at) != (k <= p.nretry) ||
		    (k <= p.nretry && at < anchor))
			abort();
	return 0;
}
