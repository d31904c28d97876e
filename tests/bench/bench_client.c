/* bench_client.c: gateway client throughput. N cc_purchasewithtoken through
 * one gw_multi with 64 in flight against build/fakegw answering after 20 ms,
 * printed beside the latency bound (64 / 20 ms = 3200/s). Also prints the
 * client's own CPU per request and the rate with no latency at all (the
 * client and the fake then compete for the CPU), to tell a slow client from
 * a slow fake. BENCH_N overrides N. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>

#include "gateway.h"
#include "support.h"

#define IN_FLIGHT  64
#define LATENCY_MS 20

struct tally {
	long done, success;
	double seconds; /* summed over requests */
	char first_problem[600];
};

static void on_done(void *udata, const struct gw_result *res)
{
	struct tally *t = udata;

	t->done++;
	t->seconds += res->seconds;
	if (res->outcome == GW_SUCCESS)
		t->success++;
	else if (!t->first_problem[0])
		snprintf(t->first_problem, sizeof(t->first_problem), "%s: %s%s",
		         gw_outcome_name(res->outcome), res->detail, res->ret_msg);
}

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double cpu_s(void)
{
	struct rusage u;

	getrusage(RUSAGE_SELF, &u);
	return (double)u.ru_utime.tv_sec + (double)u.ru_utime.tv_usec / 1e6 +
	       (double)u.ru_stime.tv_sec + (double)u.ru_stime.tv_usec / 1e6;
}

static struct gw_client *client_for(const struct ts_fakegw *g)
{
	struct cfg c;
	char err[256];
	struct gw_client *gw;

	ts_cfg(&c, NULL, g);
	c.gateway.timeout_ms = 10000;
	gw = gw_client_new(&c.gateway, err, sizeof(err));
	if (!gw) {
		fprintf(stderr, "bench-client: %s\n", err);
		exit(1);
	}
	return gw;
}

static void enrol(struct gw_client *gw)
{
	struct gw_request req = {.call = GW_ADDUSER,
	                         .customer_id = "bench",
	                         .return_url = "http://127.0.0.1:1/iotpay/return"};
	struct gw_result res;
	char *loc;

	if (gw_call(gw, &req, &res) != GW_SUCCESS) {
		fprintf(stderr, "bench-client: adduser: %s %s\n", res.detail, res.ret_msg);
		exit(1);
	}
	loc = ts_fakegw_hosted(res.pay_url, "card=4501161234567214&expiry=0728");
	if (!loc) {
		fprintf(stderr, "bench-client: hosted page gave no redirect\n");
		exit(1);
	}
	free(loc);
}

/* Runs n charges numbered from first; returns the seconds taken. */
static double run(struct gw_multi *m, long first, long n, struct tally *t)
{
	double t0 = now_s();

	for (long i = first; i < first + n; i++) {
		char mch[32];
		struct gw_request req = {.call = GW_PURCHASE_TOKEN,
		                         .mch_order_no = mch,
		                         .customer_id = "bench",
		                         .amount = 1000};
		struct gw_result res;

		snprintf(mch, sizeof(mch), "B%ld", i);
		if (gw_multi_submit(m, &req, on_done, t, &res) != 0) {
			fprintf(stderr, "bench-client: refused: %s\n", res.detail);
			exit(1);
		}
		/* keep the queue short: submit as slots free up, as billingd does */
		while (gw_multi_pending(m) >= 2 * IN_FLIGHT)
			if (gw_multi_run(m, 1000) < 0)
				exit(1);
	}
	while (gw_multi_pending(m) > 0)
		if (gw_multi_run(m, 1000) < 0)
			exit(1);
	return now_s() - t0;
}

/* Rate of n charges against a fake started with extra_args; cpu_us (may be
 * NULL) gets the client's CPU microseconds per request. */
static double measure(const char *extra_args, long n, double *cpu_us, double *mean_ms)
{
	struct ts_fakegw g;
	struct gw_client *gw;
	struct gw_multi *m;
	struct tally t = {0};
	double secs, cpu0;

	ts_fakegw_start(&g, extra_args);
	gw = client_for(&g);
	m = gw_multi_new(gw, IN_FLIGHT);
	if (!m)
		exit(1);
	enrol(gw);
	run(m, 0, 4 * IN_FLIGHT, &t); /* opens the connections */
	t = (struct tally){0};
	cpu0 = cpu_s();
	secs = run(m, 4 * IN_FLIGHT, n, &t);
	if (mean_ms)
		*mean_ms = t.seconds / (double)n * 1e3;
	if (cpu_us)
		*cpu_us = (cpu_s() - cpu0) / (double)n * 1e6;
	gw_multi_free(m);
	gw_client_free(gw);
	ts_fakegw_stop(&g);
	if (t.done != n || t.success != n) {
		fprintf(stderr,
		        "bench-client: %ld of %ld succeeded (%ld done); first problem: %s\n",
		        t.success, n, t.done, t.first_problem);
		exit(1);
	}
	return (double)n / secs;
}

int main(void)
{
	const char *env = getenv("BENCH_N");
	long n = env && atol(env) > 0 ? atol(env) : 20000;
	double bound = IN_FLIGHT * 1000.0 / LATENCY_MS, target = 0.9 * bound;
	double rate, rate0, cpu, mean;
	char args[64];

	snprintf(args, sizeof(args), "--latency-ms %d", LATENCY_MS);
	rate = measure(args, n, &cpu, &mean);
	rate0 = measure(NULL, n / 2, NULL, NULL);
	printf("bench-client: %.0f requests/s with %d in flight at %d ms latency (latency bound "
	       "%.0f/s, target >= %.0f/s: %s)\n",
	       rate, IN_FLIGHT, LATENCY_MS, bound, target, rate >= target ? "ok" : "BELOW TARGET");
	printf("bench-client: mean request time %.1f ms; client CPU %.0f us/request (ceiling "
	       "%.0f/s per core); at 0 ms latency %.0f requests/s (client and fake sharing the "
	       "CPU)\n",
	       mean, cpu, 1e6 / cpu, rate0);
	return 0;
}
