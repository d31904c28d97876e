#!/bin/bash
# make test-fresh-root (as root): README's "Try it" on a machine that has
# nothing yet. Builds a Debian 12 root with debootstrap (minbase), adds only
# make and git, clones this checkout's committed HEAD into it, and runs
# README's two commands in both orders, each in its own copy of that root:
# `make demo` then `make test`, and `make test` then `make demo`. Prints each
# command's wall time and exit status; exits 1 if any of them failed. The
# first order runs as a console login would (no LANG), the second as an ssh
# login from a desktop would (LANG=en_US.UTF-8, a locale the root lacks).
#   FRESH_ROOT_CACHE=DIR   keep debootstrap's download in DIR and reuse it on
#                          later runs (default: none, a truly fresh download)
#   FRESH_ROOT_TMP=DIR     where the roots are built (default /var/tmp; ~4 GB)
#   FRESH_ROOT_MIRROR=URL  Debian mirror (default http://deb.debian.org/debian)
#   FRESH_ROOT_TIMEOUT=S   limit for each command (default 3600 s)
#   FRESH_ROOT_KEEP=1      leave the roots (unmounted) and the logs behind
# Everything mounted is unmounted and everything started in the roots is
# killed on exit, whatever happens.
set -euo pipefail

die() {
	echo "fresh_root: $*" >&2
	exit 1
}
[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, chroot, mount)"
SUITE=bookworm
MIRROR=${FRESH_ROOT_MIRROR:-http://deb.debian.org/debian}
TMO=${FRESH_ROOT_TIMEOUT:-3600}
REPO=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
HEAD=$(git -C "$REPO" rev-parse HEAD)
git -C "$REPO" diff --quiet HEAD -- ||
	echo "fresh_root: note: uncommitted changes are not tested, only HEAD ($HEAD)"

START=$(date +%s)
WORK=$(mktemp -d "${FRESH_ROOT_TMP:-/var/tmp}/fresh-root.XXXXXX")
case $WORK in *[[:space:]]*) rmdir "$WORK" && die "FRESH_ROOT_TMP must not contain spaces" ;; esac
mkdir "$WORK/logs"

# mounts_under DIR: the mount points below DIR, deepest first.
mounts_under() {
	awk -v d="$1/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r
}
# kill_in DIR: every process whose root directory is below DIR (ours: only
# this script chroots there), so that nothing keeps a mount busy.
kill_in() {
	local p r found
	for _ in $(seq 50); do
		found=0
		for p in /proc/[0-9]*; do
			r=$(readlink "$p/root" 2>/dev/null) || continue
			case $r in "$1" | "$1"/*) found=1 && { kill -9 "${p#/proc/}" 2>/dev/null || true; } ;; esac
		done
		[ "$found" -eq 0 ] && return 0
		sleep 0.1
	done
}
# run_bg COMMAND...: runs COMMAND in its own process group and waits for it; in
# the background, so that a signal to this script is handled at once, and
# cleanup can kill the whole group.
CHILD=
run_bg() {
	setsid "$@" &
	CHILD=$!
	wait "$CHILD"
}
cleanup() {
	local rc=$? m left
	trap - EXIT INT TERM
	[ -z "$CHILD" ] || kill -9 -- "-$CHILD" 2>/dev/null || true
	kill_in "$WORK"
	for m in $(mounts_under "$WORK"); do
		umount "$m" 2>/dev/null || umount -l "$m" || true
	done
	left=$(mounts_under "$WORK")
	if [ -n "$left" ]; then
		# Never rm -rf through a mount of the host's /dev, /proc or /sys.
		echo "fresh_root: still mounted, $WORK left in place: $left" >&2
	elif [ "${FRESH_ROOT_KEEP:-}" = 1 ]; then
		echo "fresh_root: roots and logs kept in $WORK"
	else
		rm -rf --one-file-system "$WORK"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# mount_root ROOT: what PostgreSQL, apt and the tests need inside.
mount_root() {
	mount -t proc proc "$1/proc"
	mount --bind /sys "$1/sys"
	mount --bind /dev "$1/dev"
	mount --bind /dev/pts "$1/dev/pts"
	mount -t tmpfs -o mode=1777 shm "$1/dev/shm"
	touch "$1/etc/resolv.conf"
	mount --bind /etc/resolv.conf "$1/etc/resolv.conf"
}
umount_root() {
	local m
	kill_in "$1"
	for m in $(mounts_under "$1"); do umount "$m"; done
}
# in_root ROOT COMMAND [VAR=VALUE...]: COMMAND in ROOT's checkout, with the
# environment of a root login (nothing of this script's caller leaks in) and
# no stdin.
in_root() {
	run_bg timeout "$TMO" chroot "$1" /usr/bin/env -i HOME=/root USER=root LOGNAME=root \
		SHELL=/bin/sh TERM=dumb PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		"${@:3}" /bin/sh -c "cd /root/billing && $2" </dev/null
}
secs() { echo $(($(date +%s) - $1)); }

if ! command -v debootstrap >/dev/null; then
	echo "fresh_root: installing debootstrap"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		debootstrap debian-archive-keyring >/dev/null
fi

# ---- the root: debootstrap minbase, then make and git ----
BASE=$WORK/demo-first
t=$(date +%s)
args=(--variant=minbase "$SUITE" "$BASE" "$MIRROR")
if [ -n "${FRESH_ROOT_CACHE:-}" ]; then
	mkdir -p "$FRESH_ROOT_CACHE"
	tarball=$FRESH_ROOT_CACHE/$SUITE-minbase-$(dpkg --print-architecture).tgz
	if [ ! -s "$tarball" ]; then
		run_bg debootstrap --make-tarball="$tarball.part" "${args[@]}" >"$WORK/logs/debootstrap.log" 2>&1 ||
			{ tail -n 20 "$WORK/logs/debootstrap.log"; die "debootstrap --make-tarball failed"; }
		rm -rf --one-file-system "$BASE"
		mv "$tarball.part" "$tarball"
	fi
	args=(--unpack-tarball="$tarball" "${args[@]}")
fi
run_bg debootstrap "${args[@]}" >>"$WORK/logs/debootstrap.log" 2>&1 ||
	{ tail -n 20 "$WORK/logs/debootstrap.log"; die "debootstrap failed"; }
DEBOOTSTRAP_S=$(secs "$t")
echo "fresh_root: debootstrap --variant=minbase $SUITE: $DEBOOTSTRAP_S s${FRESH_ROOT_CACHE:+ (cache $FRESH_ROOT_CACHE)}"

t=$(date +%s)
mount_root "$BASE"
run_bg chroot "$BASE" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
	/bin/sh -c 'apt-get update -qq && apt-get install -y -qq --no-install-recommends make git' \
	</dev/null >"$WORK/logs/make-git.log" 2>&1 ||
	{ tail -n 20 "$WORK/logs/make-git.log"; die "apt-get install make git failed in the root"; }
# Downloaded .debs go, as on a machine where make and git came with the image.
chroot "$BASE" apt-get clean
umount_root "$BASE"
git clone -q --no-hardlinks "$REPO" "$BASE/root/billing"
git -C "$BASE/root/billing" checkout -q "$HEAD"
echo "fresh_root: make and git added, $HEAD cloned into /root/billing: $(secs "$t") s"
cp -a "$BASE" "$WORK/test-first"

# ---- README's two commands, in both orders ----
failed=0
summary=()
# run ORDER ENV CMD...: the commands one after the other in $WORK/ORDER, with
# ENV (VAR=VALUE, or empty) added to their environment.
run() {
	local order=$1 root=$WORK/$1 cmd log rc s env=()
	[ -n "$2" ] && env=("$2")
	shift 2
	mount_root "$root"
	for cmd in "$@"; do
		log=$WORK/logs/$order-${cmd// /-}.log
		echo "fresh_root: [$order] ${env[*]}${env[*]:+ }$cmd ..."
		t=$(date +%s)
		rc=0
		in_root "$root" "$cmd" "${env[@]}" >"$log" 2>&1 || rc=$?
		s=$(secs "$t")
		summary+=("$(printf '%-12s %-10s %6d s   exit %d   %s' "$order" "$cmd" "$s" "$rc" \
			"$(grep -E '^(ledger matches the gateway|[0-9]+ passed, [0-9]+ failed)' "$log" | tail -n 1)")")
		if [ "$rc" -ne 0 ]; then
			failed=$((failed + 1))
			echo "fresh_root: [$order] $cmd FAILED (exit $rc) after $s s; its last lines:"
			tail -n 40 "$log" | sed 's/^/    /'
		fi
	done
	umount_root "$root"
}
run demo-first "" "make demo" "make test"
run test-first LANG=en_US.UTF-8 "make test" "make demo"

echo
echo "fresh_root: Debian 12 minbase root + make + git, README's commands (wall time):"
printf '   %-12s %-10s %8s\n' "debootstrap" "" "$DEBOOTSTRAP_S s"
printf '   %s\n' "${summary[@]}"
echo "fresh_root: total $(secs "$START") s"
echo "fresh_root: $((4 - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
