#!/bin/sh
# Installs the Debian packages that the build, the tests, the fuzzers (clang
# and its libFuzzer runtime, libclang-rt-14-dev) and the demo need,
# skipping those already there.
set -e
pkgs="build-essential pkg-config libcurl4-openssl-dev libcjson-dev libssl-dev libpq-dev
libyaml-dev libmicrohttpd-dev libcmocka-dev postgresql postgresql-contrib curl procps
tzdata clang-format cppcheck time mandoc systemd libsystemd-dev jq clang
libclang-rt-14-dev iproute2 python3 openssl pgbouncer"
missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "make deps: installing$missing"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
