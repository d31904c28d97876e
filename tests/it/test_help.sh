#!/bin/sh
# test_help.sh: help, version and completion need no configuration: each
# form exits 0 with its text on stdout and nothing on stderr, run where no
# configuration can be found. Options are taken before or after the verb.
# TAP lines on stdout; needs no database.
set -u
B=${B:-build}
T=$(mktemp -d)
BC=$(realpath "$B/billctl")
BD=$(realpath "$B/billingd")
VERSION=$(cat VERSION)
trap 'rm -rf "$T"' EXIT INT TERM
export BILLING_CONFIG="$T/none.yaml"

. tests/tap.sh
# helps DESCRIPTION PATTERN COMMAND...: exit 0, PATTERN on stdout, stderr empty.
helps() {
	d=$1
	p=$2
	shift 2
	if (cd "$T" && "$@") >"$T/out" 2>"$T/err" && [ ! -s "$T/err" ] && grep -q -- "$p" "$T/out"; then
		ok "$d"
	else
		not_ok "$d"
	fi
}

helps "billingd --help" '^usage: billingd ' "$BD" --help
helps "billingd -h" '--check-config' "$BD" -h
helps "billingd --version" "^billingd $VERSION\$" "$BD" --version
helps "billctl --help" '^usage: billctl ' "$BC" --help
helps "billctl help" '  report \[--month YYYY-MM' "$BC" help
helps "billctl --version" "^billctl $VERSION\$" "$BC" --version
for verb in migrate plans customer subscribe subscription charge refund void pay-link query \
	reconcile report; do
	helps "billctl help $verb" "^usage: billctl .* $verb" "$BC" help "$verb"
	helps "billctl $verb --help" "^usage: billctl .* $verb" "$BC" "$verb" --help
done
helps "billctl help completion" '^usage: billctl help \[VERB\] | completion bash' "$BC" help completion
helps "billctl completion --help" '^usage: billctl help \[VERB\] | completion bash' "$BC" completion --help
helps "billctl refund --help: its option" '\[--amount CENTS\]' "$BC" refund --help
helps "billctl -h before the verb" '^usage: billctl .* void PAY_ORDER_ID' "$BC" -h void

(cd "$T" && "$BC" help frobnicate) >"$T/out" 2>"$T/err"
if [ $? -eq 2 ] && grep -q "unknown verb 'frobnicate'" "$T/err" && [ ! -s "$T/out" ]; then
	ok "billctl help of an unknown verb: exit 2, one line"
else
	not_ok "billctl help of an unknown verb: exit 2, one line"
fi

# Options after the verb are the global ones: -c names the file read.
(cd "$T" && "$BC" plans list --json -c "$T/after.yaml") >"$T/out" 2>"$T/err"
if [ $? -eq 2 ] && grep -q "^billctl: $T/after.yaml: No such file" "$T/err"; then
	ok "billctl VERB ... -c FILE: -c is taken after the verb"
else
	not_ok "billctl VERB ... -c FILE: -c is taken after the verb"
fi
(cd "$T" && "$BC" plans list) >"$T/out" 2>"$T/err"
if [ $? -eq 2 ] && grep -q "^billctl: $T/none.yaml: No such file" "$T/err"; then
	ok "billctl without -c reads BILLING_CONFIG"
else
	not_ok "billctl without -c reads BILLING_CONFIG"
fi

helps "billctl completion bash" '^complete -F _billctl billctl$' "$BC" completion bash
if bash -n "$T/out" 2>"$T/err"; then ok "the completion script parses"; else not_ok "the completion script parses"; fi
# completes WORDS...: what the script offers for the last word.
completes() {
	bash -c '. "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _billctl; echo "${COMPREPLY[*]}"' \
		sh "$T/out" "$@"
}
check_completion() {
	want=$1
	shift
	got=$(completes "$@")
	if [ "$got" = "$want" ]; then ok "completion of '$*': $want"; else
		echo "#   got '$got'"
		not_ok "completion of '$*': $want"
	fi
}
check_completion "subscribe subscription" billctl sub
check_completion "--amount" billctl -c x.yaml refund --am
check_completion "sync" billctl --json plans s
check_completion "change-plan" billctl subscription ch
check_completion "refund reconcile report" billctl help re

echo "1..$n"
[ $failed -eq 0 ]
