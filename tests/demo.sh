#!/bin/sh
# make demo: a simulated year of recurring billing, end to end, on this
# machine: a throwaway PostgreSQL (tests/pg.sh), the fake IOTPay gateway
# (build/fakegw) declining 8% of charges and losing or garbling 6% of the
# answers, 50 customers enrolled through the gateway's hosted card page and
# billingd's listener, subscribed across the four plans of plans/, then
# `billingd --once --now DAY` for every day of 2027 with a few admin actions
# on the way. Ends with a summary table checked against the gateway's own
# ledger (exit 1 when they differ). Everything it starts is stopped on exit.
set -u
. tests/fakegw.sh
. tests/billingd.sh
B=${B:-build}
YEAR=2027
NCUST=50
KEY=DEMOKEY0123456789abcdef
MCH=10000701
GOOD_CARD=4501161234567214
MC_CARD=5500000000000004
BAD_CARD=4501161234560002 # the fake always declines cards ending 0002

T=$(mktemp -d /tmp/billing-demo.XXXXXX)
PGTMP=
GWPID=
DPID=
cleanup() {
	[ -n "$DPID" ] && kill "$DPID" 2>/dev/null && wait "$DPID" 2>/dev/null
	[ -n "$GWPID" ] && kill "$GWPID" 2>/dev/null && wait "$GWPID" 2>/dev/null
	[ -n "$PGTMP" ] && sh tests/pg.sh stop "$PGTMP"
	rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

die() {
	echo "demo: FAILED: $*" >&2
	exit 1
}
step() { printf '\n== %s\n' "$*"; }
say() { printf '   %s\n' "$*"; }
bc() { "$B/billctl" -c "$T/billing.yaml" "$@"; }
# json_str KEY < JSON: the first "KEY":"value".
json_str() { grep -o "\"$1\":\"[^\"]*\"" | head -n 1 | sed 's/.*:"\(.*\)"/\1/'; }
money() { awk -v c="$1" 'BEGIN { printf "%s$%.2f", c < 0 ? "-" : "", (c < 0 ? -c : c) / 100 }'; }

for bin in billingd billctl fakegw; do
	[ -x "$B/$bin" ] || die "$B/$bin is missing: build first (make)"
done
START=$(date +%s)
echo "billing demo: one simulated year of subscriptions against a fake IOTPay gateway"

# ---- 1. the world ----
step "1. A throwaway PostgreSQL and the fake gateway"
PGENV=$(sh tests/pg.sh start) || die "could not start PostgreSQL"
eval "$PGENV"
DBURL=$DATABASE_URL
unset DATABASE_URL # billing.yaml names the database
say "PostgreSQL on 127.0.0.1:$PGPORT (data in $PGTMP)"
fakegw_start "$T" --key "$KEY" --mch-id "$MCH" --decline-rate 0.08 --seed 2027 || die "the fake gateway did not start"
for kind in drop_after http5xx; do
	curl -sf -o /dev/null -X POST "$FAKE/_fake/faults" \
		-d "{\"endpoint\":\"cc_purchasewithtoken\",\"kind\":\"$kind\",\"rate\":0.03}" ||
		die "could not set the $kind fault"
done
say "fake IOTPay on $FAKE: declines 8% of charges; on 3% of charges the answer is"
say "lost after the card was charged, on 3% more it is an HTTP 502 (the outcome is unknown)"

# ---- 2. configuration ----
step "2. Configuration: billing.yaml and the merchant key (mode 0600) in $T"
printf '%s\n' "$KEY" >"$T/merchant.key"
chmod 600 "$T/merchant.key"
# write_config PORT: billing.yaml with the listener on 127.0.0.1:PORT.
write_config() {
	cat >"$T/billing.yaml" <<EOF
gateway:
  base_url: $FAKE/v2
  mch_id: "$MCH"
  job_no: demo
  merchant_key_file: $T/merchant.key
  timeout_ms: 5000
  max_in_flight: 16
database:
  url: "$DBURL"
billing:
  timezone: America/Toronto
  order_prefix: D
  lease_seconds: 30
  poll_interval_ms: 200
listen:
  address: 127.0.0.1:$1
admin:
  address: 127.0.0.1:$(($1 + 1))
enrolment:
  return_url: http://127.0.0.1:$1/iotpay/return
  success_url: https://shop.example/welcome
  failure_url: https://shop.example/card-problem
plans_dir: $PWD/plans
EOF
}
write_config 9
bc migrate >"$T/out" 2>&1 || die "billctl migrate: $(cat "$T/out")"
say "billctl $(head -n 1 "$T/out")"
bc plans sync >/dev/null 2>"$T/err" || die "billctl plans sync: $(cat "$T/err")"
say "billctl plans sync; billctl plans list:"
bc plans list | sed 's/^/     /'

# ---- 3. enrolment through the hosted card page ----
step "3. Enrolling $NCUST customers through the gateway's hosted card page"
# billingd's listener receives the card page's return: a free port is one
# that billingd manages to bind.
admin_ready() { curl -sf -o /dev/null "http://127.0.0.1:$(($1 + 1))/healthz"; }
billingd_up write_config admin_ready "$T/billing.yaml" "$T/listener.log" ||
	die "billingd's listener did not start: $(tail -n 3 "$T/listener.log")"
say "billingd is running, its listener on 127.0.0.1:$LPORT (/iotpay/return, /iotpay/notify),"
say "/healthz and /metrics on its admin address 127.0.0.1:$((LPORT + 1))"
say "per customer: billctl customer enrol -> payUrl; the customer fills in the card page;"
say "the page redirects to our /iotpay/return, which records the card (signature checked)"
NAMES="Ada Alan Barbara Claude Donald Edsger Frances Grace Hedy Ivan John Ken Leslie Margaret
Niklaus Ole Peter Radia Sophie Tim Ursula Vint Whitfield Xavier Yukihiro Zuse"
i=0
for first in $NAMES $NAMES; do
	i=$((i + 1))
	[ $i -gt $NCUST ] && break
	id=$(printf 'c%02d' $i)
	card=$GOOD_CARD
	[ $((i % 3)) -eq 0 ] && card=$MC_CARD
	[ $i -gt $((NCUST - 4)) ] && card=$BAD_CARD # one per plan: they never pay
	bc --json customer enrol "$id" --email "$id@example.com" --name "$first Demo" >"$T/out" 2>"$T/err" ||
		die "customer enrol $id: $(cat "$T/err")"
	url=$(json_str pay_url <"$T/out")
	back=$(curl -s -o /dev/null -w '%{redirect_url}' "$url&card=$card&expiry=0728")
	case "$back" in
	"http://127.0.0.1:$LPORT/iotpay/return"*) ;;
	*) die "the card page of $id did not send the customer back to us: '$back'" ;;
	esac
	landed=$(curl -s -o /dev/null -w '%{redirect_url}' "$back")
	[ $i -eq 1 ] && say "c01: card page -> ${back%%\?*}?... -> $landed"
done
kill "$DPID" && wait "$DPID"
DPID=
bc --json customer list >"$T/out" || die "customer list"
BOUND=$(grep -o '"state":"bound"' "$T/out" | wc -l)
[ "$BOUND" -eq $NCUST ] || die "$BOUND of $NCUST customers bound"
say "$BOUND customers bound, 4 of them with a card the bank always declines; billingd stopped"

# ---- 4. subscriptions ----
step "4. Subscribing them across the four plans, starting on various days of January $YEAR"
# cNN by plan: 1 monthly, 2 weekly, 3 annual, 0 instalments (i mod 4).
i=0
while [ $i -lt $NCUST ]; do
	i=$((i + 1))
	id=$(printf 'c%02d' $i)
	case $((i % 4)) in
	1) plan=monthly ;; 2) plan=weekly ;; 3) plan=annual ;; 0) plan=instalments ;;
	esac
	start=$(printf '%s-01-%02d' $YEAR $((1 + (i * 7) % 28)))
	bc --json --now "$YEAR-01-01T00:00:00-05:00" subscribe "$id" "$plan" --start "$start" \
		>"$T/out" 2>"$T/err" || die "subscribe $id $plan: $(cat "$T/err")"
	echo "$id $(grep -o '"id":[0-9]*' "$T/out" | head -n 1 | cut -d: -f2) $plan" >>"$T/subs.map"
done
say "$(cut -d' ' -f3 "$T/subs.map" | sort | uniq -c | awk '{ printf "%s%s %d", (NR > 1 ? ", " : ""), $2, $1 }')"
say "(monthly starts with the plan's 14-day trial; instalments end after 12 payments)"

# ---- 5. the year ----
step "5. A year of billing: billingd --once --now <each day of $YEAR, 12:00 Toronto>"
say "month     attempts  paid  declined  unknown  resolved"
# sub CUSTOMER: the id of its subscription.
sub() { awk -v c="$1" '$1 == c { print $2 }' "$T/subs.map"; }
# first_paid CUSTOMER: the payOrderId of its first paid charge.
first_paid() {
	bc --json subscription show "$(sub "$1")" | grep -o '"pay_order_id":"[^"]\+"' | head -n 1 |
		sed 's/.*:"\(.*\)"/\1/'
}
# admin DAY: the admin actions of that simulated day, at 16:00 UTC on the
# billing clock (the ledger dates them then, as it dates the charges).
admin() {
	at="${1}T16:00:00Z"
	case "$1" in
	"$YEAR-03-15")
		bc --now "$at" refund "$(first_paid c01)" --amount 500 >"$T/out" 2>&1
		say "  admin, Mar 15: 5.00 back to c01 as a goodwill gesture (billctl refund):"
		say "    $(cat "$T/out")"
		bc --now "$at" void "$(first_paid c02)" >"$T/out" 2>&1
		say "  admin, Mar 15: c02's first meal kit was charged by mistake (billctl void):"
		say "    $(cat "$T/out")"
		;;
	"$YEAR-04-01")
		bc --now "$at" subscription change-plan "$(sub c05)" annual >"$T/out" 2>&1
		say "  admin, Apr 1: c05 moves to the annual plan from its next period"
		;;
	"$YEAR-06-01")
		bc --now "$at" subscription cancel "$(sub c09)" --at-period-end >"$T/out" 2>&1
		say "  admin, Jun 1: c09 cancels at the end of the paid period"
		;;
	"$YEAR-07-01")
		bc --now "$at" subscription pause "$(sub c06)" >"$T/out" 2>&1
		say "  admin, Jul 1: c06 pauses the meal kit for the summer"
		;;
	"$YEAR-08-26")
		bc --now "$at" subscription resume "$(sub c06)" >"$T/out" 2>&1
		say "  admin, Aug 26: c06 resumes (charged from today)"
		;;
	esac
}
# count FILE: attempts paid declined unknown resolved, from billingd's logfmt.
count() {
	awk '/ event=charge / { a++ }
	     / event=charge / && / outcome=success / { p++ }
	     / event=charge_resolved / && / outcome=success / { p++ }
	     / outcome=declined / || / outcome=busy / { d++ }
	     / event=charge / && / outcome=unknown / { u++ }
	     / event=charge_resolved / && !/ outcome=unknown / { r++ }
	     END { printf "%d %d %d %d %d\n", a, p, d, u, r }' "$1"
}
: >"$T/billingd.log"
: >"$T/month.log"
day=$(date -u -d "$YEAR-01-01" +%s)
end=$(date -u -d "$((YEAR + 1))-01-01" +%s)
month=$YEAR-01
while [ "$day" -lt "$end" ]; do
	d=$(date -u -d "@$day" +%F)
	"$B/billingd" -c "$T/billing.yaml" --once --now "${d}T17:00:00Z" 2>"$T/pass.log" ||
		die "billingd --once --now $d: $(grep level=error "$T/pass.log" | head -n 2)"
	cat "$T/pass.log" >>"$T/month.log"
	admin "$d"
	day=$((day + 86400))
	next=$(date -u -d "@$day" +%Y-%m)
	if [ "$next" != "$month" ]; then
		count "$T/month.log" | awk -v m="$month" '{ printf "   %s  %8d  %4d  %8d  %7d  %8d\n", m, $1, $2, $3, $4, $5 }'
		cat "$T/month.log" >>"$T/billingd.log"
		: >"$T/month.log"
		month=$next
	fi
done
# Answers lost on the last day are resolved by one more pass (or a few).
for _ in 1 2 3 4 5; do
	"$B/billingd" -c "$T/billing.yaml" --once --now "$YEAR-12-31T23:00:00Z" 2>"$T/pass.log" ||
		die "billingd, final pass: $(grep level=error "$T/pass.log" | head -n 2)"
	cat "$T/pass.log" >>"$T/billingd.log"
	grep -q 'outcome=unknown' "$T/pass.log" || break
done

# ---- 6. results ----
step "6. The year in figures"
read -r ATTEMPTS PAID DECLINED UNKNOWN RESOLVED <<EOF
$(count "$T/billingd.log")
EOF
RETRIES=$(grep ' event=charge ' "$T/billingd.log" | grep -c 'mch_order_no=D[0-9]*-[0-9]*-\([2-9]\|[1-9][0-9]\) ')
bc --json subscription list >"$T/subs" || die "subscription list"
states() { grep -o "\"state\":\"$1\"" "$T/subs" | wc -l; }
FROM=$YEAR-01-01
TO=$((YEAR + 1))-01-01
# Ours: the accountants' export of the simulated year (rows are dated on the
# billing clock, when the money moved), one row per money movement.
bc report --from "$FROM" --to "$TO" >"$T/report" 2>"$T/err" || die "report: $(cat "$T/err")"
OUR_N=$(grep -c '^[^,]*,charge,' "$T/report")
bc report --from "$FROM" --to "$TO" --totals >"$T/totals" 2>"$T/err" || die "report: $(cat "$T/err")"
# date,plan,currency,charges,charges_cents,refunds,refunds_cents,voids,voids_cents,net_cents,net
IFS=, read -r _ _ _ _ OUR_CH _ OUR_RF _ OUR_VD OUR_NET _ <<EOF
$(grep '^total,' "$T/totals" | tr -d '\r')
EOF
OUR_RF=${OUR_RF#-} OUR_VD=${OUR_VD#-} # the export shows them negative
printf '   %-44s %10s\n' "charge attempts sent" "$ATTEMPTS" \
	"  paid" "$PAID" \
	"  declined by the bank" "$DECLINED" \
	"  outcome unknown (answer lost or HTTP 502)" "$UNKNOWN" \
	"unknowns resolved with cc_query" "$RESOLVED" \
	"  found paid at the gateway" "$(grep ' event=charge_resolved ' "$T/billingd.log" | grep -c ' outcome=success ')" \
	"  proven absent, so charged again" "$(grep ' event=charge_resolved ' "$T/billingd.log" | grep -c ' outcome=absent ')" \
	"retries (2nd+ attempt for a period)" "$RETRIES"
printf '   %-44s %10s\n' "subscriptions" "$(grep -o '"state":' "$T/subs" | wc -l)"
for s in trialing active past_due paused canceled ended; do
	printf '   %-44s %10s\n' "  $s" "$(states $s)"
done
printf '   %-44s %10s\n' "revenue (paid charges)" "$(money "$OUR_CH")" \
	"refunds" "$(money "-$OUR_RF")" \
	"voids" "$(money "-$OUR_VD")" \
	"net" "$(money "$OUR_NET")"

# ---- 7. against the gateway ----
step "7. Checked against the gateway's own ledger (GET /_fake/ledger)"
curl -sf "$FAKE/_fake/ledger" | tr -d ' \n' |
	grep -o '"amount":[0-9]*,"status":[0-9]*,"payType":"[a-z]*"' |
	sed 's/"amount":\([0-9]*\),"status":\([0-9]*\),"payType":"\([a-z]*\)"/\1 \2 \3/' >"$T/ledger" ||
	die "could not read the gateway's ledger"
read -r GW_N GW_CH GW_RF GW_VD <<EOF
$(awk '$3 == "pay" && $2 == 2 { n++; c += $1 } $3 == "refund" { r += $1 } $3 == "void" { v += $1 }
	END { printf "%d %d %d %d\n", n, c, r, v }' "$T/ledger")
EOF
printf '   %-12s %8s %14s %12s %12s\n' "" "orders" "charged" "refunded" "voided" \
	"gateway" "$GW_N" "$(money "$GW_CH")" "$(money "$GW_RF")" "$(money "$GW_VD")" \
	"ours" "$OUR_N" "$(money "$OUR_CH")" "$(money "$OUR_RF")" "$(money "$OUR_VD")"
# reconcile's window is business time: the simulated year, as the report's
bc reconcile --from "$FROM" --to "$TO" >"$T/out" 2>&1
RECON=$?
say "billctl reconcile, every charge and refund checked with cc_query:"
say "  $(tail -n 1 "$T/out" | sed 's/^reconcile [^:]*: //')"
if [ "$GW_N" -ne "$OUR_N" ] || [ "$GW_CH" -ne "$OUR_CH" ] || [ "$GW_RF" -ne "$OUR_RF" ] ||
	[ "$GW_VD" -ne "$OUR_VD" ] || [ "$PAID" -ne "$OUR_N" ] || [ $RECON -ne 0 ]; then
	echo "ledger matches the gateway: NO"
	exit 1
fi
echo
echo "ledger matches the gateway: yes ($(($(date +%s) - START)) s)"
