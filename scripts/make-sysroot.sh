#!/usr/bin/env bash
# make-sysroot.sh - build real Debian sysroot trees for integration tests and benchmarks, cached.
#
# Usage: scripts/make-sysroot.sh [-o CACHE_DIR] [-m MIRROR] [-f] NAME...
#
#   NAME          amd64-v1  Debian bookworm, debootstrap --variant=minbase, native amd64
#                           (stands in for stage3-sysroot/x86_64)
#                 amd64-v2  the "yearly update" of v1: the same bootstrap plus
#                           libcap2-bin,iputils-ping,less,xz-utils,zstd: ~300 more entries,
#                           +4 MB, and /usr/bin/ping carries a security.capability xattr
#   -o CACHE_DIR  where trees live (default: $SYSROOT_FIXTURE_DIR, else
#                 /var/cache/sysroot-registry/sysroots)
#   -m MIRROR     Debian mirror URL (default: the first .../debian URI in the host's apt sources)
#   -f            rebuild even if the cached tree is current
#
# Layout of CACHE_DIR:
#   NAME/           the finished tree (only ever appears by rename, so it is never half-built)
#   NAME.stamp      line 1: the build parameters; line 2: when, how long, size, entry count
#   NAME.packages   "package version arch", one a line, for provenance
#   NAME.log        debootstrap's output
#   .build-NAME/    work in progress; deleted and restarted on the next run if left behind
#   .NAME.lock      flock(1) lock, so parallel test workers build a tree once
#
# A tree whose stamp matches the requested parameters is not rebuilt: its path is printed at once,
# without root. Building needs root (debootstrap makes device nodes and chowns files), network access
# to the mirror, and 30 s to 1.5 min (mirror speed) and 130 MB per tree. Trees are not bit-for-bit
# reproducible: package versions follow the mirror and maintainer scripts write timestamps.
#
# stdout: the tree path for each NAME, one a line, in argument order. stderr: progress.
set -euo pipefail

SUITE=bookworm
VARIANT=minbase
ARCH=amd64
V2_EXTRA=libcap2-bin,iputils-ping,less,xz-utils,zstd
# Bump when the build recipe changes in a way the other parameters do not capture.
RECIPE=1

CACHE_DIR=${SYSROOT_FIXTURE_DIR:-/var/cache/sysroot-registry/sysroots}
MIRROR=
FORCE=0

say() { printf 'make-sysroot %s: %s\n' "$(date +%T)" "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
usage() { sed -n '3,15p' "$0" | sed -E 's/^# ?//' >&2; exit "$1"; }

while getopts ':o:m:fh' opt; do
  case $opt in
    o) CACHE_DIR=$OPTARG ;;
    m) MIRROR=$OPTARG ;;
    f) FORCE=1 ;;
    h) usage 0 ;;
    :) say "option -$OPTARG needs a value"; usage 2 ;;
    *) say "unknown option -$OPTARG"; usage 2 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || { say "name at least one tree"; usage 2; }
for name in "$@"; do
  case $name in
    amd64-v1 | amd64-v2) ;;
    *) say "unknown tree '$name' (known: amd64-v1, amd64-v2)"; usage 2 ;;
  esac
done

# Print the mirror URIs configured for apt, deb822 files first (Debian 12's default layout), then
# one-line "deb [options] URI suite ..." entries.
apt_mirrors() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    sed -nE 's/^[[:space:]]*URIs:[[:space:]]*//Ip' "$f" | tr -s '[:blank:]' '\n'
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    sed -nE 's/^[[:space:]]*deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+).*/\2/p' "$f"
  done
}

if [ -z "$MIRROR" ]; then
  # The archive proper ends in /debian; skip debian-security, debian-ports and third-party repos.
  MIRROR=$(apt_mirrors | grep -E '^(https?|file):.*/debian/?$' | head -n 1 || true)
  [ -n "$MIRROR" ] || die "found no Debian mirror (…/debian) in /etc/apt sources; pass -m MIRROR"
fi
MIRROR=${MIRROR%/}

mkdir -p "$CACHE_DIR" 2>/dev/null || true
[ -d "$CACHE_DIR" ] || die "cannot create cache directory $CACHE_DIR (not writable? building needs root)"
CACHE_DIR=$(cd "$CACHE_DIR" && pwd)

params_for() {
  local extra=
  [ "$1" = amd64-v2 ] && extra=$V2_EXTRA
  echo "recipe=$RECIPE name=$1 suite=$SUITE variant=$VARIANT arch=$ARCH include=$extra mirror=$MIRROR"
}

is_current() {
  local dest=$CACHE_DIR/$1 stamp=$CACHE_DIR/$1.stamp
  [ "$FORCE" = 0 ] && [ -d "$dest" ] && [ -f "$stamp" ] && [ "$(head -n 1 "$stamp")" = "$(params_for "$1")" ]
}

# debootstrap mounts /proc and /sys inside the target while it configures packages; a killed run
# leaves them mounted, and deleting the tree would then recurse into the host's /proc and /sys.
unmount_below() {
  local m
  awk -v top="$1/" 'index($2, top) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m"
  done
}

remove_tree() {
  [ -e "$1" ] || return 0
  unmount_below "$1"
  rm -rf --one-file-system "$1"
}

# While debootstrap runs, BUILDING is its work tree and CHILD its process group. A signal (a test
# runner's timeout, ^C) stops the whole group, so no orphaned dpkg keeps writing, and the EXIT trap
# unmounts what it left behind.
BUILDING=
CHILD=
on_exit() { if [ -n "$BUILDING" ]; then unmount_below "$BUILDING" || true; fi; }
on_signal() {
  if [ -n "$CHILD" ]; then
    kill -TERM -- "-$CHILD" 2>/dev/null || true
    wait "$CHILD" 2>/dev/null || true
  fi
  say "interrupted; the partial tree stays in ${BUILDING:-$CACHE_DIR} until the next run"
  exit 130
}
trap on_exit EXIT
trap on_signal INT TERM HUP

TOOLS_READY=0
prepare_host() {
  [ "$TOOLS_READY" = 1 ] && return 0
  [ "$(id -u)" = 0 ] ||
    die "building a sysroot needs root (debootstrap creates device nodes and sets owners); rerun as root"
  [ "$(dpkg --print-architecture)" = "$ARCH" ] ||
    die "the $ARCH trees are bootstrapped natively; this host is $(dpkg --print-architecture)"
  local need=()
  command -v debootstrap >/dev/null || need+=(debootstrap)
  command -v getfattr >/dev/null || need+=(attr)
  command -v wget >/dev/null || need+=(wget)
  if [ "${#need[@]}" -gt 0 ]; then
    say "installing ${need[*]}"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
  fi
  # Fail in seconds with a plain reason instead of after debootstrap's retries.
  if [[ $MIRROR != file:* ]] &&
    ! wget -q -O /dev/null --timeout=20 --tries=2 "$MIRROR/dists/$SUITE/Release"; then
    die "cannot fetch $MIRROR/dists/$SUITE/Release: no network to the Debian mirror? (-m to choose another)"
  fi
  TOOLS_READY=1
}

# Make the tree independent of the machine that built it and drop apt's download caches, as Debian's
# container images do: a sysroot ships packages' files, not the .debs and indexes they came from.
tidy() {
  local root=$1
  echo localhost > "$root/etc/hostname" # debootstrap copies the host's
  rm -f "$root/etc/resolv.conf"         # ditto: the build host's nameservers
  rm -f "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/archives/partial/*
  rm -f "$root"/var/cache/apt/*.bin
  rm -rf "${root:?}"/var/lib/apt/lists/*
}

build() {
  local name=$1 params extra=
  params=$(params_for "$name")
  [ "$name" = amd64-v2 ] && extra=$V2_EXTRA
  local dest=$CACHE_DIR/$name work=$CACHE_DIR/.build-$name
  local log=$CACHE_DIR/.build-$name.log

  prepare_host
  remove_tree "$work"
  BUILDING=$work
  local args=(--variant="$VARIANT" --arch="$ARCH")
  [ -n "$extra" ] && args+=(--include="$extra")
  say "$name: debootstrap ${args[*]} $SUITE $MIRROR (log: $log)"
  local t0=$SECONDS
  # In the background and in its own process group so on_signal can stop all of it; `wait` returns
  # early on a trapped signal where a foreground command would delay the trap until it finished.
  setsid debootstrap "${args[@]}" "$SUITE" "$work" "$MIRROR" >"$log" 2>&1 &
  CHILD=$!
  if ! wait "$CHILD"; then
    tail -n 25 "$log" >&2
    die "$name: debootstrap failed after $((SECONDS - t0))s; full log in $log"
  fi
  CHILD=
  unmount_below "$work"
  BUILDING=

  if [ "$name" = amd64-v2 ]; then
    # iputils-ping's postinst grants CAP_NET_RAW with setcap when libcap2-bin is present; the
    # registry must carry that xattr through, so a v2 tree without it is useless as a fixture.
    local cap
    if ! cap=$(getfattr --absolute-names -e hex -n security.capability "$work/usr/bin/ping" 2>&1); then
      die "$name: /usr/bin/ping has no security.capability xattr ($cap); does $CACHE_DIR keep xattrs?"
    fi
    say "$name: /usr/bin/ping has $(grep -F security.capability <<<"$cap")"
  fi

  dpkg-query --admindir="$work/var/lib/dpkg" -W -f '${Package} ${Version} ${Architecture}\n' |
    sort >"$CACHE_DIR/.build-$name.packages"
  tidy "$work"

  local took=$((SECONDS - t0)) size entries
  size=$(du -sxh "$work" | cut -f 1)
  entries=$(find "$work" -xdev | wc -l)
  rm -f "$CACHE_DIR/$name.stamp" # a tree without a stamp is never trusted
  remove_tree "$dest"
  mv "$work" "$dest"
  mv "$CACHE_DIR/.build-$name.packages" "$CACHE_DIR/$name.packages"
  mv "$log" "$CACHE_DIR/$name.log"
  printf '%s\nbuilt %s in %ss, %s, %s entries\n' "$params" "$(date -u +%FT%TZ)" "$took" "$size" "$entries" \
    >"$CACHE_DIR/$name.stamp"
  say "$name: done in ${took}s: $size, $entries entries"
}

for name in "$@"; do
  if ! is_current "$name"; then
    prepare_host
    # One builder per tree: a second caller (another test worker) waits here, then finds it current.
    exec 9>"$CACHE_DIR/.$name.lock"
    flock 9
    if is_current "$name"; then
      say "$name: built meanwhile by another process"
    else
      build "$name"
    fi
    exec 9>&-
  fi
  echo "$CACHE_DIR/$name"
done
