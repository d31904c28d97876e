#!/bin/sh
# make bench | bench-client | bench-due: each benchmark prints its figures
# beside the bound it aims at. Runs against a throwaway PostgreSQL. make
# bench runs BENCH_RUNS times (default 3) at each gateway latency of
# BENCH_LATENCY_MS (default "20 1": the two one after the other, so that
# their CPU per charge is compared on the same machine state), each on a new
# one, and its bounds are set against the runs' medians
# (tests/bench_verdict.sh).
set -eu
B=${B:-build}
export B
PGTMP=
figs=$(mktemp)
trap '[ -z "$PGTMP" ] || sh tests/pg.sh stop "$PGTMP"; rm -f "$figs"' EXIT INT TERM
if [ "$1" != daemon ]; then
	eval "$(sh tests/pg.sh start)"
	sh "tests/bench_$1.sh"
	exit 0
fi
runs=${BENCH_RUNS:-3}
for r in $(seq "$runs"); do
	for ms in ${BENCH_LATENCY_MS:-20 1}; do
		echo "bench: run $r of $runs, gateway at $ms ms"
		eval "$(sh tests/pg.sh start)"
		BENCH_RUN=$r BENCH_LATENCY_MS=$ms BENCH_FIGURES=$figs sh tests/bench_daemon.sh
		sh tests/pg.sh stop "$PGTMP"
		PGTMP=
	done
done
sh tests/bench_verdict.sh "$figs"
