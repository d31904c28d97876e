#!/bin/sh
# bench_verdict.sh FILE: the medians of make bench's runs (one line each in
# FILE, written by tests/bench_daemon.sh: due, seconds, PostgreSQL CPU
# seconds, peak RSS kB, pgbench tps with 1 and 8 clients, latency ms, in
# flight, daemons, run number, autovacuum's CPU seconds, buffer accesses,
# transactions, pgbench's CPU ms per transaction unpaced and held to the
# run's rate) beside their bounds, per gateway latency, and the highest peak
# RSS beside its own. When a run was made at 20 ms and at a lower latency,
# the two one after the other, the medians of the pairs' ratios (20 ms over
# the other): of the database's work per charge (buffer accesses) beside
# "the same", at most 1.10; of its CPU per charge without autovacuum, beside
# what the same ratio is for pgbench's write held to the 20 ms run's rate
# (docs/design.md, "What a charge costs the database"). Exits 1 when one misses it. A
# single run moves by 10-15 % on a shared 2-core machine; the median of
# three is what the bounds are set against.
awk '
function median(a, k,    i, j, t) {
	for (i = 2; i <= k; i++)
		for (j = i; j > 1 && a[j - 1] > a[j]; j--) {
			t = a[j]; a[j] = a[j - 1]; a[j - 1] = t
		}
	return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
}
function pick(src, l,    i, n) {
	delete got
	for (i = 1; i <= nr; i++)
		if (lat[i] == l) got[++n] = src[i]
	return n
}
{
	nr++; rate[nr] = $1 / $2; per[nr] = $3 * 1000 / $1; tps1[nr] = $5; tps8[nr] = $6
	lat[nr] = $7; inf = $8; d = $9; run[nr] = $10
	if ($4 > kb) kb = $4
	if (!($7 in seen)) { seen[$7] = 1; lats[++nl] = $7 }
	cpu[$7, $10] = ($3 - $11) * 1000 / $1; work[$7, $10] = $12 / $1; tx[$7, $10] = $13 * 1000 / $1
	if ($7 == 20 && $15 > 0) paced[++np] = $15 / $14
}
END {
	if (!nr) { print "bench: FAILED: no run finished"; exit 1 }
	for (g = 1; g <= nl; g++) {
		l = lats[g]; k = pick(rate, l); r = median(got, k)
		pick(per, l); p = median(got, k); pick(tps8, l); t8 = median(got, k)
		pick(tps1, l); t1 = median(got, k)
		bound = d * inf * 1000 / l
		if (l < 20 && t8 < bound) {
			target = 0.9 * t8; what = sprintf("90%% of pgbench with 8 clients, %.0f tps", t8)
		} else {
			target = 0.9 * bound; what = sprintf("90%% of the latency bound %.0f/s", bound)
		}
		printf "bench: gateway at %d ms, the median of %d run%s, beside the bounds:\n", l, k, (k > 1 ? "s" : "")
		if (d > 1) {
			printf "bench:   %.0f charges/s combined (%d daemons; no bound)\n", r, d
		} else {
			ok = r >= target; bad += !ok
			printf "bench:   %.0f charges/s (%s: >= %.0f/s: %s)\n", r, what, target, ok ? "ok" : "BELOW"
		}
		ok = p <= 0.25; bad += !ok
		printf "bench:   PostgreSQL CPU per charge %.3f ms (bound <= 0.25 ms: %s)\n", p, ok ? "ok" : "ABOVE"
		printf "bench:   pgbench comparable write: %.0f tps with 1 client, %.0f with 8\n", t1, t8
		if (l < 20) low = l
	}
	if (low != "" && (20 in seen)) {
		for (i = 1; i <= nr; i++)
			if (lat[i] == 20 && ((low, run[i]) in cpu)) {
				m++; rw[m] = work[20, run[i]] / work[low, run[i]]
				rt[m] = tx[20, run[i]] / tx[low, run[i]]; rc[m] = cpu[20, run[i]] / cpu[low, run[i]]
			}
		if (m) {
			printf "bench: at 20 ms over %d ms, the median of %d pair%s:\n", low, m, (m > 1 ? "s" : "")
			q = median(rw, m); ok = q <= 1.10; bad += !ok
			printf "bench:   PostgreSQL work per charge (buffer accesses) %.2f (the same: <= 1.10: %s); transactions per charge %.2f\n",
			       q, ok ? "ok" : "ABOVE", median(rt, m)
			printf "bench:   PostgreSQL CPU per charge without autovacuum %.2f", median(rc, m)
			if (np) printf " (pgbench'"'"'s write held to the 20 ms run'"'"'s rate: %.2f, the machine'"'"'s own)", median(paced, np)
			printf "\n"
		}
	}
	ok = kb < 30 * 1024; bad += !ok
	printf "bench: billingd peak RSS %.1f MB, the highest (bound < 30 MB: %s)\n", kb / 1024, ok ? "ok" : "ABOVE"
	if (bad) { print "bench: FAILED: below a bound (above)"; exit 1 }
}' "$1"
