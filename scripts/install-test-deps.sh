#!/usr/bin/env bash
# install-test-deps.sh - make sure the Debian packages the test suite drives are installed.
#
# Usage: scripts/install-test-deps.sh
#
#   ostree       the reference implementation the interop tests compare against
#   gnupg        gpg/gpgv: ostree's gpgme verifies GPG-signed commits and summaries with them
#   debootstrap  builds the real sysroot fixtures (scripts/make-sysroot.sh)
#   nginx-light  a stock static web server for "serve the store directory" tests
#   zstd         reference compressor for tarball/bench comparisons
#   attr         setfattr/getfattr, to create and check xattrs in fixtures
#   xz-utils     xz, for .tar.xz inputs
#   time         GNU time, for peak RSS in `npm run bench`
#   radosgw ceph-mon ceph-osd   a real one-node S3 server for the S3 tests (scripts/s3-server.sh)
#   libisal-dev  ISA-L's headers, for the igzip deflate addon that `npm ci` builds (native/igzip);
#                without it the registry falls back to Node's zlib, and the test suite fails under CI
#   libzstd-dev  libzstd's headers, for the addon that decodes a pull's pack on libuv's pool
#                (native/zstd); without it a pull decodes on its main thread, and the suite fails
#
# Idempotent and silent when everything is present (no apt call at all), so CI and the
# vitest global setup can run it every time. When something is missing it runs
# `apt-get update` once and installs only what is missing. Without root it lists what is
# missing and exits 1 rather than half-working.
set -euo pipefail

# package -> the commands (or, for a library, a file given by its absolute path) that prove it is
# installed. Checking commands instead of dpkg's database also accepts an equivalent install (e.g.
# nginx-full instead of nginx-light).
declare -A PROVIDES=(
  [ostree]='ostree'
  [gnupg]='gpg gpgv gpgconf'
  [debootstrap]='debootstrap'
  [nginx-light]='nginx'
  [zstd]='zstd'
  [attr]='setfattr getfattr'
  [xz-utils]='xz'
  [time]='/usr/bin/time'
  [radosgw]='radosgw radosgw-admin'
  [ceph-mon]='ceph-mon monmaptool'
  [ceph-osd]='ceph-osd'
  [libisal-dev]='/usr/include/isa-l/igzip_lib.h'
  [libzstd-dev]='/usr/include/zstd.h'
)
ORDER=(ostree gnupg debootstrap nginx-light zstd attr xz-utils time radosgw ceph-mon ceph-osd libisal-dev libzstd-dev)

# Non-root shells often lack the sbin directories, where debootstrap and nginx live.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin:/usr/bin:/bin"

present() { if [[ $1 == /* ]]; then [ -e "$1" ]; else command -v "$1" >/dev/null 2>&1; fi; }

missing=()
for pkg in "${ORDER[@]}"; do
  for cmd in ${PROVIDES[$pkg]}; do
    if ! present "$cmd"; then
      missing+=("$pkg")
      break
    fi
  done
done

[ "${#missing[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  {
    echo "install-test-deps: missing Debian packages: ${missing[*]}"
    echo "install-test-deps: the tests use these real tools and will not skip without them."
    echo "install-test-deps: install them as root, e.g.:"
    echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}"
  } >&2
  exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-test-deps: missing ${missing[*]} and no apt-get here (Debian/Ubuntu expected)" >&2
  exit 1
fi

echo "install-test-deps: installing ${missing[*]}" >&2
# Installing nginx-light would otherwise start a system nginx on port 80 that nobody asked for
# (tests start their own on free ports). A temporary policy-rc.d is Debian's switch for that;
# leave an existing one alone.
POLICY=/usr/sbin/policy-rc.d
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\n# temporary, from install-test-deps.sh\nexit 101\n' > "$POLICY"
  chmod 755 "$POLICY"
  trap 'rm -f "$POLICY"' EXIT
fi
# A fresh CI image has empty package lists, so one update is needed before any install.
apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2

# Catch a package whose name installed but whose command is still absent (renamed package,
# diverted binary): better to fail here than in the middle of a test run.
for pkg in "${missing[@]}"; do
  for cmd in ${PROVIDES[$pkg]}; do
    if ! present "$cmd"; then
      echo "install-test-deps: $pkg installed but '$cmd' not found" >&2
      exit 1
    fi
  done
done
echo "install-test-deps: done" >&2
