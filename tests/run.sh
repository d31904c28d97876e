#!/bin/sh
# Runs every unit and integration test against a throwaway PostgreSQL and
# ends with the failures, named again, and one line: "N passed, N failed".
# TESTS=pattern runs a subset.
set -u
B=${B:-build}
export B
eval "$(sh tests/pg.sh start)" || exit 1
trap 'sh tests/pg.sh stop "$PGTMP"' EXIT INT TERM
export CMOCKA_MESSAGE_OUTPUT=TAP
passed=0
failed=0
log=$(mktemp)
fails=$(mktemp)
for t in "$B"/tests/unit/test_* "$B"/tests/it/test_* tests/it/test_*.sh; do
	[ -e "$t" ] || continue
	case "$t" in *.o | *.d) continue ;; esac # objects and make's dependency files
	if [ -n "${TESTS:-}" ] && ! echo "$t" | grep -q -- "$TESTS"; then continue; fi
	echo "== $t"
	case "$t" in
	*.sh) timeout 1200 sh "$t" >"$log" 2>&1 ;;
	*) timeout 1200 "$t" >"$log" 2>&1 ;;
	esac
	rc=$?
	cat "$log"
	grep '^not ok ' "$log" | sed "s|^|$t: |" >>"$fails"
	ok=$(grep -c '^ok ' "$log")
	nok=$(grep -c '^not ok ' "$log")
	passed=$((passed + ok))
	failed=$((failed + nok))
	if [ $rc -ne 0 ] && [ "$nok" -eq 0 ]; then
		echo "not ok - $t exited with status $rc" | tee -a "$fails"
		failed=$((failed + 1))
	fi
done
cat "$fails"
rm -f "$log" "$fails"
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
