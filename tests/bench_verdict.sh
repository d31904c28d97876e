#!/bin/sh
# bench_verdict.sh FILE: the medians of make bench's runs (one line each in
# FILE, written by tests/bench_daemon.sh: due, seconds, PostgreSQL CPU
# seconds, peak RSS kB, pgbench tps with 1 and 8 clients, latency ms, in
# flight, daemons) beside their bounds, and the highest peak RSS beside its
# own. Exits 1 when one misses it. A single run moves by 10-15 % on a shared
# 2-core machine; the median of three is what the bounds are set against.
awk '
function median(a, k,    i, j, t) {
	for (i = 2; i <= k; i++)
		for (j = i; j > 1 && a[j - 1] > a[j]; j--) {
			t = a[j]; a[j] = a[j - 1]; a[j - 1] = t
		}
	return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
}
{
	k++; rate[k] = $1 / $2; per[k] = $3 * 1000 / $1; tps1[k] = $5; tps8[k] = $6
	if ($4 > kb) kb = $4
	lat = $7; inf = $8; d = $9
}
END {
	if (!k) { print "bench: FAILED: no run finished"; exit 1 }
	bound = d * inf * 1000 / lat; r = median(rate, k); p = median(per, k); t8 = median(tps8, k)
	if (lat < 20 && t8 < bound) {
		target = 0.9 * t8; what = sprintf("90%% of pgbench with 8 clients, %.0f tps", t8)
	} else {
		target = 0.9 * bound; what = sprintf("90%% of the latency bound %.0f/s", bound)
	}
	printf "bench: the median of %d run%s, beside the bounds:\n", k, (k > 1 ? "s" : "")
	if (d > 1) {
		printf "bench:   %.0f charges/s combined (%d daemons; no bound)\n", r, d
	} else {
		ok = r >= target; bad += !ok
		printf "bench:   %.0f charges/s (%s: >= %.0f/s: %s)\n", r, what, target, ok ? "ok" : "BELOW"
	}
	ok = p <= 0.25; bad += !ok
	printf "bench:   PostgreSQL CPU per charge %.3f ms (bound <= 0.25 ms: %s)\n", p, ok ? "ok" : "ABOVE"
	ok = kb < 30 * 1024; bad += !ok
	printf "bench:   billingd peak RSS %.1f MB, the highest (bound < 30 MB: %s)\n", kb / 1024, ok ? "ok" : "ABOVE"
	printf "bench:   pgbench comparable write: %.0f tps with 1 client, %.0f with 8\n", median(tps1, k), t8
	if (bad) { print "bench: FAILED: below a bound (above)"; exit 1 }
}' "$1"
