#!/bin/sh
# make bench | bench-client | bench-due: each benchmark prints its figures
# beside the bound it aims at. Runs against a throwaway PostgreSQL. make
# bench runs BENCH_RUNS times (default 3), each on a new one, and its
# bounds are set against the runs' medians (tests/bench_verdict.sh).
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
	echo "bench: run $r of $runs"
	eval "$(sh tests/pg.sh start)"
	BENCH_FIGURES=$figs sh tests/bench_daemon.sh
	sh tests/pg.sh stop "$PGTMP"
	PGTMP=
done
sh tests/bench_verdict.sh "$figs"
