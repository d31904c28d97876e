# cli_lib.sh: sourced by the shell integration tests that drive billctl and
# billingd as an operator would: TAP helpers, a fake gateway on a free port,
# a fresh database and a configuration for both. Needs B, T (a scratch
# directory), DBNAME and the PG* variables of tests/run.sh. Sets GWPID, FAKE,
# URL, KEY, MCH; `cleanup` stops and removes what it started.
KEY=TESTKEY0123456789abcdef
MCH=10000701
GWPID=
. tests/tap.sh

cleanup() {
	[ -n "$GWPID" ] && kill "$GWPID" 2>/dev/null
	[ -n "$GWPID" ] && wait "$GWPID" 2>/dev/null
	dropdb --if-exists --force "$DBNAME" >/dev/null 2>&1
	rm -rf "$T"
}

# bc ARGS...: billctl with the test configuration ($CONF, default
# $T/billing.yaml); stdout in $T/out, stderr in $T/err, exit status in $rc.
bc() {
	"$B/billctl" -c "${CONF:-$T/billing.yaml}" "$@" >"$T/out" 2>"$T/err"
	rc=$?
}
has() { grep -q -- "$1" "$T/out"; }
err_has() { grep -q -- "$1" "$T/err"; }
sql() { psql -X -q -At -v ON_ERROR_STOP=1 "$URL" -c "$1"; }

# start_fakegw [OPTIONS...]: the fake gateway on a free port; sets FAKE.
. tests/fakegw.sh
start_fakegw() { fakegw_start "$T" --key "$KEY" --mch-id "$MCH" "$@"; }

# fresh_db: drops and creates DBNAME; sets URL.
fresh_db() {
	dropdb --if-exists --force "$DBNAME" >/dev/null 2>&1
	createdb "$DBNAME" || return 1
	URL="postgresql://$PGUSER:$PGPASSWORD@$PGHOST:$PGPORT/$DBNAME"
	unset DATABASE_URL # the configuration's database.url is the one used
}

# write_config FILE DB_URL KEY_FILE: a configuration for the fake gateway.
write_config() {
	cat >"$1" <<EOC
gateway:
  base_url: $FAKE/v2
  mch_id: "$MCH"
  job_no: jack123
  merchant_key_file: $3
  timeout_ms: 2000
  connect_timeout_ms: 1000
  max_in_flight: 8
database:
  url: "$2"
billing:
  timezone: America/Toronto
  order_prefix: T
  lease_seconds: 10
listen:
  address: 127.0.0.1:9
enrolment:
  return_url: http://127.0.0.1:9/iotpay/return
  success_url: https://shop.example/thanks
  failure_url: https://shop.example/sorry
plans_dir: $PWD/plans
EOC
}

# setup_world: the fake gateway, a fresh database, the merchant key and
# $T/billing.yaml, then the schema and the plans; 1 with a TAP line if any
# part fails.
setup_world() {
	start_fakegw || { not_ok "fakegw did not start"; return 1; }
	fresh_db || { not_ok "createdb $DBNAME"; return 1; }
	printf '%s\n' "$KEY" >"$T/merchant.key"
	chmod 600 "$T/merchant.key"
	write_config "$T/billing.yaml" "$URL" "$T/merchant.key"
	bc migrate
	check "billctl migrate applies the schema" [ $rc -eq 0 ]
	bc plans sync
	check "billctl plans sync loads plans/" [ $rc -eq 0 ]
}

# enrol ID CARD: enrols, plays the customer on the hosted page, checks the
# binding; 0 when bound.
enrol() {
	bc customer enrol "$1" --email "$1@example.com" --name "Customer $1"
	[ $rc -eq 0 ] || return 1
	curl -s -o /dev/null "$(cat "$T/out")&card=$2&expiry=0728"
	bc customer check "$1"
	[ $rc -eq 0 ]
}
