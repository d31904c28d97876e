#!/bin/sh
# test_install.sh: `make install DESTDIR=... PREFIX=/usr` lays out exactly the
# documented files, the installed unit names the installed billingd, and the
# installed binaries find their configuration as billing.yaml(5) says: -c,
# else BILLING_CONFIG, else ./billing.yaml, else /etc/billing/billing.yaml,
# with relative paths taken from the configuration file's directory.
# TAP lines on stdout; needs no database.
set -u
B=${B:-build}
T=$(mktemp -d)
R=$T/root
trap 'rm -rf "$T"' EXIT INT TERM

. tests/tap.sh

# The outer make's jobserver is not ours; the sanitizer build installs itself.
san=
[ "$B" = build-san ] && san=SANITIZE=1
env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s --no-print-directory install $san \
	DESTDIR="$R" PREFIX=/usr >"$T/out" 2>"$T/err"
check "make install DESTDIR=... PREFIX=/usr succeeds" [ $? -eq 0 ]

(cd "$R" && find . -type f -printf '%m %p\n' | sort) >"$T/layout"
cat >"$T/want" <<'LAYOUT'
644 ./usr/lib/systemd/system/billingd.service
644 ./usr/share/bash-completion/completions/billctl
644 ./usr/share/billing/plans/annual.yaml
644 ./usr/share/billing/plans/instalments.yaml
644 ./usr/share/billing/plans/monthly.yaml
644 ./usr/share/billing/plans/weekly.yaml
644 ./usr/share/doc/billing/billing.yaml.example
644 ./usr/share/man/man1/billctl.1
644 ./usr/share/man/man5/billing.yaml.5
644 ./usr/share/man/man8/billingd.8
755 ./usr/bin/billctl
755 ./usr/sbin/billingd
LAYOUT
sort -o "$T/want" "$T/want"
if diff -u "$T/want" "$T/layout" >"$T/out"; then
	ok "the installed files and their modes are exactly the documented ones"
else
	not_ok "the installed files and their modes are exactly the documented ones"
fi
U=$R/usr/lib/systemd/system/billingd.service
check "the unit starts /usr/sbin/billingd on /etc/billing/billing.yaml" \
	grep -qx 'ExecStart=/usr/sbin/billingd -c /etc/billing/billing.yaml' "$U"
check "the unit reloads with SIGHUP and restarts on failure" \
	sh -c "grep -qx 'ExecReload=/bin/kill -HUP \$MAINPID' '$U' && grep -qx 'Restart=on-failure' '$U'"
for h in User=billing ProtectSystem=strict NoNewPrivileges=yes PrivateTmp=yes; do
	check "the unit has $h" grep -qx "$h" "$U"
done
"$B/billctl" completion bash | cmp -s - "$R/usr/share/bash-completion/completions/billctl"
check "the bash completion installed is billctl's" [ $? -eq 0 ]
cmp -s "$R/usr/share/doc/billing/billing.yaml.example" billing.yaml.example
check "billing.yaml.example is installed as is" [ $? -eq 0 ]

# README's "Running it for real" names installed files under the default
# PREFIX: each must be where the default `make install` puts it.
env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s --no-print-directory install $san \
	DESTDIR="$T/default" >"$T/out" 2>"$T/err"
sed -n '/^## Running it for real/,/^## billctl/p' README.md | grep -o '/usr/local/[^ ]*' |
	sort -u >"$T/named"
missing=
while read -r p; do
	[ -e "$T/default$p" ] || missing="$missing $p"
done <"$T/named"
[ -s "$T/named" ] || missing="(none found)"
check "README's install steps name files the default install lays out ($(wc -l <"$T/named") paths)" \
	[ -z "$missing" ]
[ -z "$missing" ] || echo "#   missing:$missing"
check "the unit of the default install starts /usr/local/sbin/billingd" \
	grep -qx 'ExecStart=/usr/local/sbin/billingd -c /etc/billing/billing.yaml' \
	"$T/default/usr/local/lib/systemd/system/billingd.service"

# An /etc/billing as README's "Running it for real" makes it, inside $R:
# the example as installed (relative key file and plans), the plans copied
# next to it.
E=$R/etc/billing
mkdir -p "$E"
# The gateway: a port nothing answers on (the key cannot be proven, which
# --check-config only warns about), never the real one.
sed 's|^  base_url: .*|  base_url: http://127.0.0.1:9/v2|' \
	"$R/usr/share/doc/billing/billing.yaml.example" >"$E/billing.yaml"
cp -r "$R/usr/share/billing/plans" "$E/plans"
install -m 600 /dev/null "$E/merchant.key"
printf 'TESTKEY0123456789abcdef\n' >"$E/merchant.key"
unset BILLING_CONFIG IOTPAY_MERCHANT_KEY
D=$R/usr/sbin/billingd

(cd / && BILLING_CONFIG=$E/billing.yaml "$D" --check-config) >"$T/out" 2>"$T/err"
check "BILLING_CONFIG from /: key and plans found next to the file" \
	sh -c "[ $? -eq 0 ] && grep -qx '$E/billing.yaml: configuration ok, 4 plans in $E/plans' '$T/out'"

(cd "$E" && "$D" --check-config) >"$T/out" 2>"$T/err"
check "no -c, no BILLING_CONFIG: ./billing.yaml" \
	sh -c "[ $? -eq 0 ] && grep -q '^billing.yaml: configuration ok, 4 plans in plans' '$T/out'"

mkdir "$T/other"
cp "$E/billing.yaml" "$T/other/billing.yaml"
(cd "$T/other" && BILLING_CONFIG=$E/billing.yaml "$D" --check-config) >"$T/out" 2>"$T/err"
check "BILLING_CONFIG wins over ./billing.yaml" \
	sh -c "[ $? -eq 0 ] && grep -q '^$E/billing.yaml: configuration ok' '$T/out'"

(cd "$T/other" && BILLING_CONFIG=/nonexistent "$D" -c "$E/billing.yaml" --check-config) \
	>"$T/out" 2>"$T/err"
check "-c wins over BILLING_CONFIG" [ $? -eq 0 ]

if [ ! -e /etc/billing/billing.yaml ]; then
	(cd "$T" && "$D" --check-config) >"$T/out" 2>"$T/err"
	check "otherwise /etc/billing/billing.yaml, named in one error line, exit 2" \
		sh -c "[ $? -eq 2 ] && [ \$(wc -l <'$T/err') -eq 1 ] &&
			grep -q '^billingd: /etc/billing/billing.yaml: No such file' '$T/err'"
	(cd "$T" && "$R/usr/bin/billctl" plans list) >"$T/out" 2>"$T/err"
	check "billctl too reads /etc/billing/billing.yaml by default" \
		sh -c "[ $? -eq 2 ] && grep -q '^billctl: /etc/billing/billing.yaml: No such file' '$T/err'"
fi

chmod 644 "$E/merchant.key"
(cd / && "$D" -c "$E/billing.yaml" --check-config) >"$T/out" 2>"$T/err"
check "the relative key file is the one checked (mode 0644 refused, exit 2)" \
	sh -c "[ $? -eq 2 ] && grep -q 'gateway.merchant_key_file: the file is readable' '$T/err'"

echo "1..$n"
[ $failed -eq 0 ]
