#!/bin/sh
# Gateway client throughput (make bench-client, through tests/bench.sh):
# cc_purchasewithtoken through gw_multi, 64 in flight, against build/fakegw
# answering after 20 ms. BENCH_N sets the number of requests (default 20000).
set -eu
B=${B:-build}
export B
exec "$B/tests/bench/bench_client"
