/* fuzz_plans.c: plan file loading (plans_load_file) on any bytes: no crash,
 * no leak; an error is one line, and a plan loaded has values the gateway
 * accepts and that the calendar computes with (periods, retries) without
 * overflow (UBSan) or going backwards. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fuzz.h"
#include "billing.h"
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
	struct billing_sub s;
	char err[512] = "";
	int64_t anchor, prev;

	if (plans_load_file(fuzz_file("basic.yaml", data, size), &p, err, sizeof(err)) < 0) {
		if (!err[0] || strchr(err, '\n'))
			abort();
		return 0;
	}
	if (p.amount < 1 || p.amount > 2147483647 || !p.code[0] || strchr(p.name, '\n') ||
	    p.interval_count < 1 || p.trial_days < 0 || p.cycles < 0 || p.nretry < 0 ||
	    p.nretry > PLAN_MAX_RETRY)
		abort();
	/* 2026-03-02T12:00:00Z, a subscription's life of periods (billing rules) */
	anchor = billing_anchor(1772452800, p.trial_days);
	prev = anchor - 1;
	s = (struct billing_sub){.anchor = anchor, .state = BILLING_ACTIVE};
	for (int n = 0; n < 3 && s.state == BILLING_ACTIVE; n++) {
		billing_apply(&p, &s, BILLING_SUCCEEDED, anchor);
		if (s.period_start <= prev || s.period_end <= s.period_start)
			abort();
		prev = s.period_start;
	}
	s = (struct billing_sub){.anchor = anchor, .state = BILLING_ACTIVE};
	for (int k = 1; k <= p.nretry + 1; k++) {
		billing_apply(&p, &s, BILLING_DECLINED, anchor);
		if (k <= p.nretry ? s.next_charge_at < anchor : s.next_charge_at != 0)
			abort();
	}
	return 0;
}
