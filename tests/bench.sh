#!/bin/sh
# make bench | bench-client | bench-due: each benchmark prints its figures
# beside the bound it aims at. Runs against a throwaway PostgreSQL.
set -eu
B=${B:-build}
export B
eval "$(sh tests/pg.sh start)"
trap 'sh tests/pg.sh stop "$PGTMP"' EXIT INT TERM
sh "tests/bench_$1.sh"
