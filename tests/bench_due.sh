#!/bin/sh
# The due-query benchmark (tests/bench/bench_due.c): 1,000,000 subscriptions,
# 1,000 due; prints the plan and the figures, fails when the query stops
# being an index scan on subscriptions_due. Uses the PostgreSQL that
# DATABASE_URL names (tests/bench.sh sets it), else a throwaway one.
#   B=build sh tests/bench_due.sh [SUBSCRIPTIONS [DUE]]
set -eu
B=${B:-build}
export B
if [ -z "${DATABASE_URL:-}" ]; then
	eval "$(sh tests/pg.sh start)"
	trap 'sh tests/pg.sh stop "$PGTMP"' EXIT INT TERM
fi
"$B/tests/bench/bench_due" "$@"
