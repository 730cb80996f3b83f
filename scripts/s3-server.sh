#!/usr/bin/env bash
# s3-server.sh - a real, throwaway S3 server for tests: a one-node Ceph cluster (1 monitor, 1 OSD on
# the in-memory "memstore" backend, 1 RADOS Gateway) listening on 127.0.0.1 only.
#
# Usage: scripts/s3-server.sh start [-d STATE_DIR] [-p PORT] [-b BUCKET] [-w PID]
#        scripts/s3-server.sh stop  -d STATE_DIR      (or -p PORT for the default STATE_DIR)
#        scripts/s3-server.sh env   -d STATE_DIR      (or -p PORT)
#
#   start  install radosgw, ceph-mon and ceph-osd if missing (root only), build a fresh cluster in
#          STATE_DIR, create the S3 user (fixed test keys) and BUCKET, wait until S3 answers.
#          stdout: only `export S3_...=...` lines, so `eval "$(scripts/s3-server.sh start -b t)"`
#          works; progress and errors go to stderr. If STATE_DIR already holds a healthy cluster
#          made by this script, it is reused (BUCKET is still created).
#   stop   signal exactly the processes whose pids STATE_DIR records (each only while its
#          /proc/PID/cmdline still names STATE_DIR), wait for them to exit, delete STATE_DIR.
#          A missing STATE_DIR is not an error.
#   env    print the export lines of the cluster running from STATE_DIR.
#
#   -d STATE_DIR  config, keyrings, data, sockets, logs and pid files (default:
#                 ${TMPDIR:-/tmp}/sysroot-s3-PORT)
#   -p PORT       the S3 port (default: a free port on 127.0.0.1); the monitor gets another free one
#   -b BUCKET     create this bucket (3-63 characters of a-z 0-9 . -)
#   -w PID        start: stop the server by itself once process PID has exited (checked every second;
#                 the test helper passes its own pid, so a killed test run leaves nothing behind)
#
# Exported: S3_ENDPOINT S3_ACCESS_KEY_ID S3_SECRET_ACCESS_KEY S3_BUCKET S3_REGION S3_STATE_DIR
set -euo pipefail

ACCESS_KEY=SYSROOTTESTACCESSKEY
SECRET_KEY=sysroot-test-secret-key-not-a-secret-000
REGION='us-east-1'
PACKAGES=(radosgw ceph-mon ceph-osd)
# The commands the cluster needs, all from those packages and their dependencies (ceph-common).
COMMANDS=(ceph-mon ceph-osd radosgw radosgw-admin ceph ceph-authtool monmaptool)
# Whatever else this script relies on, and the package that has it.
declare -A HELPERS=([curl]=curl [setsid]=util-linux [timeout]=coreutils)
# Written first into every state directory: stop deletes and start wipes only directories holding it.
MARKER=.sysroot-s3-server
SELF=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)/$(basename "${BASH_SOURCE[0]}")

usage() { sed -n '2,/^set -euo/{/^#/p}' "$0" | sed -E 's/^# ?//' >&2; exit "$1"; }

T0=${EPOCHREALTIME/./}
say() {
  local us=$((${EPOCHREALTIME/./} - T0))
  printf 's3-server %d.%01ds: %s\n' $((us / 1000000)) $((us / 100000 % 10)) "$*" >&2
}
die() { say "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------------------------------------
# Arguments

[ $# -gt 0 ] || usage 2
CMD=$1
shift
case $CMD in
  start | stop | env | watch) ;; # watch: internal, the -w watcher
  -h | --help | help) usage 0 ;;
  *) say "unknown command '$CMD'"; usage 2 ;;
esac

DIR=
PORT=
BUCKET=
OWNER=
while getopts ':d:p:b:w:h' opt; do
  case $opt in
    d) DIR=$OPTARG ;;
    p) PORT=$OPTARG ;;
    b) BUCKET=$OPTARG ;;
    w) OWNER=$OPTARG ;;
    h) usage 0 ;;
    :) say "option -$OPTARG needs a value"; usage 2 ;;
    *) say "unknown option -$OPTARG"; usage 2 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -eq 0 ] || { say "unexpected argument '$1'"; usage 2; }

if [ -n "$PORT" ]; then
  if ! [[ $PORT =~ ^[0-9]+$ ]] || [ "$PORT" -lt 1 ] || [ "$PORT" -gt 65535 ]; then die "bad port '$PORT'"; fi
fi
if [ -n "$BUCKET" ] && ! [[ $BUCKET =~ ^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$ ]]; then
  die "bad bucket name '$BUCKET' (S3 wants 3-63 characters of a-z 0-9 . -)"
fi

# Daemons and tools find sbin helpers there; non-root shells often lack it.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

# ---------------------------------------------------------------------------------------------
# Ports: a port counts as taken if any TCP socket (v4 or v6, any state) has it as its local port.

port_taken() {
  local hex
  hex=$(printf ':%04X ' "$1")
  grep -qs -- "$hex" /proc/net/tcp /proc/net/tcp6
}

free_port() {
  local p i
  for ((i = 0; i < 200; i++)); do
    p=$((20000 + (SRANDOM % 40000)))
    [ "$p" != "${1:-}" ] && ! port_taken "$p" && { echo "$p"; return 0; }
  done
  die "found no free TCP port on 127.0.0.1"
}

# ---------------------------------------------------------------------------------------------
# State directory and the daemons in it

set_dir() { # derive the paths inside DIR (already absolute)
  CONF=$DIR/ceph.conf
  PIDS=$DIR/pids
}

daemon_pid() { # daemon_pid NAME -> pid recorded for NAME, if its process still runs from DIR
  local file=$PIDS/$1.pid pid cmdline
  [ -s "$file" ] || return 1
  pid=$(<"$file")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  cmdline=$(tr "\0" " " 2>/dev/null <"/proc/$pid/cmdline") || return 1
  [[ $cmdline == *"$DIR/"* ]] || return 1
  echo "$pid"
}

DAEMONS=(rgw osd.0 mon.a)
# Every process start leaves running: the daemons, and the -w watcher (a copy of this script).
PROCESSES=(watch "${DAEMONS[@]}")

# stop_one NAME SIGNAL GRACE: signal NAME's daemon, wait up to GRACE seconds for it to exit, then
# SIGKILL it. An exited daemon waiting to be reaped (a zombie) has an empty cmdline, so it counts
# as gone.
stop_one() {
  local name=$1 sig=$2 grace=$3 pid i
  pid=$(daemon_pid "$name") || return 0
  [ "$pid" != $$ ] || return 0 # the watcher, stopping the server itself
  kill "-$sig" "$pid" 2>/dev/null || true
  if [ "$sig" != KILL ]; then
    for ((i = 0; i < grace * 20; i++)); do
      daemon_pid "$name" >/dev/null || return 0
      sleep 0.05
    done
    say "$name (pid $pid) still running $grace s after SIG$sig; SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  for ((i = 0; i < 100; i++)); do
    daemon_pid "$name" >/dev/null || return 0
    sleep 0.05
  done
  say "$name (pid $pid) survived SIGKILL"
  return 1
}

# In this order: radosgw first (it exits in ~0.3 s, but hangs if the OSD is already gone); then
# the OSD with SIGKILL, because on SIGTERM memstore would copy the whole throwaway store to disk and
# wait for the monitor to mark it down (~5 s); the monitor last (~0.1 s).
stop_daemons() {
  local ok=0
  stop_one watch TERM 5 || ok=1
  stop_one rgw TERM 10 || ok=1
  stop_one osd.0 KILL - || ok=1
  stop_one mon.a TERM 10 || ok=1
  return "$ok"
}

# Exited daemons stay zombies until init reaps them (here PID 1 does so about once a second), and
# pgrep still lists zombies: wait up to 5 s so that "stopped" means gone from the process table.
# A zombie holds no port, memory or file, so one still there after that is only mentioned.
await_reaped() {
  local name pid stat i zombies
  for ((i = 0; i < 100; i++)); do
    zombies=()
    for name in "${PROCESSES[@]}"; do
      [ -s "$PIDS/$name.pid" ] || continue
      pid=$(<"$PIDS/$name.pid")
      stat=$(cat 2>/dev/null "/proc/$pid/stat") || continue
      [[ ${stat##*) } == Z* ]] && zombies+=("$pid")
    done
    [ ${#zombies[@]} -eq 0 ] && return 0
    sleep 0.05
  done
  say "exited, but not yet reaped by their parent: pids ${zombies[*]}"
}

print_env() {
  printf 'export %s=%q\n' \
    S3_ENDPOINT "http://127.0.0.1:$PORT" \
    S3_ACCESS_KEY_ID "$ACCESS_KEY" \
    S3_SECRET_ACCESS_KEY "$SECRET_KEY" \
    S3_BUCKET "$BUCKET" \
    S3_REGION "$REGION" \
    S3_STATE_DIR "$DIR"
}

http_status() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@" || true; }

s3_answers() { [ "$(http_status "http://127.0.0.1:$PORT/")" = 200 ]; }

healthy() { # a complete cluster from this script runs from DIR and answers S3: set PORT to its port
  local name port
  if [ ! -f "$DIR/$MARKER" ] || [ ! -s "$DIR/port" ]; then return 1; fi
  for name in "${DAEMONS[@]}"; do daemon_pid "$name" >/dev/null || return 1; done
  port=$(<"$DIR/port")
  [ "$(http_status "http://127.0.0.1:$port/")" = 200 ] || return 1
  PORT=$port
}

# start_time PID: when PID started (clock ticks since boot), to tell it from a later namesake;
# nothing if PID has exited (a zombie has exited too).
start_time() {
  local stat fields
  stat=$(cat 2>/dev/null "/proc/$1/stat") || return 0
  read -ra fields <<<"${stat##*) }"
  # fields[0] is field 3 of stat(5), the state; field 22 is the start time.
  [ "${fields[0]}" = Z ] || echo "${fields[19]}"
}

do_stop() {
  [ -d "$DIR" ] || { say "no $DIR: nothing to stop"; exit 0; }
  DIR=$(cd "$DIR" && pwd -P)
  [ -f "$DIR/$MARKER" ] || die "$DIR was not made by s3-server.sh (no $MARKER); leaving it alone"
  set_dir
  stop_daemons || die "could not stop every daemon; $DIR kept"
  await_reaped
  rm -rf --one-file-system -- "$DIR"
  say "stopped; removed $DIR"
  exit 0
}

# ---------------------------------------------------------------------------------------------
# stop / env / watch

if [ "$CMD" != start ]; then
  if [ -z "$DIR" ]; then
    [ -n "$PORT" ] || die "$CMD needs -d STATE_DIR (or the -p PORT it was started with)"
    DIR=${TMPDIR:-/tmp}/sysroot-s3-$PORT
  fi
  [ "$CMD" = stop ] && do_stop
  if [ "$CMD" = watch ]; then # -w PID:START_TIME, from start
    # stop ends this watcher with SIGTERM: take the pending sleep along, leaving nothing behind.
    SLEEPER=
    trap '[ -z "$SLEEPER" ] || kill "$SLEEPER" 2>/dev/null; exit 0' TERM
    while [ -f "$DIR/$MARKER" ] && [ "$(start_time "${OWNER%%:*}")" = "${OWNER#*:}" ]; do
      sleep 1 &
      SLEEPER=$!
      wait "$SLEEPER" || true
    done
    trap - TERM
    [ -f "$DIR/$MARKER" ] || exit 0
    say "process ${OWNER%%:*} has exited: stopping the server it started"
    do_stop
  fi
  [ -d "$DIR" ] || die "no $DIR: no server there"
  DIR=$(cd "$DIR" && pwd -P)
  set_dir
  healthy || die "no healthy server runs from $DIR"
  [ -f "$DIR/bucket" ] && BUCKET=$(<"$DIR/bucket")
  print_env
  exit 0
fi

# ---------------------------------------------------------------------------------------------
# start: packages

missing_packages() { # prints the packages whose commands are missing, one a line
  local cmd
  for cmd in "${COMMANDS[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || { printf '%s\n' "${PACKAGES[@]}"; break; }
  done
  for cmd in "${!HELPERS[@]}"; do command -v "$cmd" >/dev/null 2>&1 || echo "${HELPERS[$cmd]}"; done
}

install_packages() {
  local pkgs
  mapfile -t pkgs < <(missing_packages)
  [ ${#pkgs[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    die "Ceph is not installed and this is not root: run as root, or first: apt-get install -y ${pkgs[*]}"
  fi
  command -v apt-get >/dev/null 2>&1 || die "${pkgs[*]} missing and there is no apt-get (Debian expected)"
  # Test files start servers in parallel: one installs, the others wait for it and then find
  # everything there.
  exec 9>"${TMPDIR:-/tmp}/sysroot-s3-install.lock"
  flock 9
  mapfile -t pkgs < <(missing_packages)
  if [ ${#pkgs[@]} -gt 0 ]; then
    say "installing ${pkgs[*]} (once; about 30 s)"
    local log
    log=$(mktemp)
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}"; } \
      </dev/null >"$log" 2>&1; then
      tail -n 30 "$log" >&2
      rm -f "$log"
      die "apt-get install ${pkgs[*]} failed (no Debian mirror reachable?)"
    fi
    rm -f "$log"
    mapfile -t pkgs < <(missing_packages)
    [ ${#pkgs[@]} -eq 0 ] || die "apt-get installed the packages, yet commands of ${pkgs[*]} are missing"
  fi
  exec 9>&-
}

if [ -n "$OWNER" ]; then
  if ! [[ $OWNER =~ ^[0-9]+$ ]] || [ -z "$(start_time "$OWNER")" ]; then die "-w $OWNER: no such process"; fi
fi
install_packages

# ---------------------------------------------------------------------------------------------
# start: state directory

PORT_ASKED=$PORT
[ -n "$PORT" ] || PORT=$(free_port)
[ -n "$DIR" ] || DIR=${TMPDIR:-/tmp}/sysroot-s3-$PORT
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd -P)
set_dir

if [ -f "$DIR/$MARKER" ] && healthy; then
  if [ -n "$PORT_ASKED" ] && [ "$PORT_ASKED" != "$PORT" ]; then
    die "$DIR already serves S3 on port $PORT, not $PORT_ASKED; stop it first or choose another -d"
  fi
  say "reusing the server already running from $DIR"
  REUSED=1
else
  REUSED=0
  if [ -n "$(ls -A "$DIR")" ]; then
    [ -f "$DIR/$MARKER" ] || die "$DIR is not empty and was not made by s3-server.sh; choose another -d"
    say "$DIR holds a dead or half-built cluster: stopping what is left of it and starting afresh"
    stop_daemons || die "could not stop the old daemons in $DIR"
    find "$DIR" -mindepth 1 -delete
  fi
  # Unix socket paths (the daemons' admin sockets) are limited to 107 bytes.
  [ ${#DIR} -le 70 ] || die "state directory path too long for Ceph's sockets (${#DIR} > 70): $DIR"
fi

# ---------------------------------------------------------------------------------------------
# start: on failure, show the daemons' last words and stop what was started

STARTED=0
on_exit() {
  local rc=$?
  if [ "$rc" -eq 0 ] || [ "$REUSED" = 1 ]; then return 0; fi
  if [ "$STARTED" != 1 ]; then # nothing launched yet: leave no half-made state directory behind
    if [ -f "$DIR/$MARKER" ]; then rm -rf --one-file-system -- "$DIR"; fi
    return 0
  fi
  local f
  for f in "$DIR"/log/*; do
    # The cluster log repeats the monitor's; the others are the daemons' logs and outputs.
    if [ ! -s "$f" ] || [ "${f##*/}" = cluster.log ]; then continue; fi
    printf -- '--- last lines of %s\n' "$f" >&2
    tail -n 12 "$f" >&2
  done
  say "start failed; stopping the daemons it started (logs kept in $DIR/log; stop -d $DIR removes them)"
  stop_daemons || true
}
trap on_exit EXIT
trap 'say "interrupted"; exit 130' INT TERM HUP

if [ "$REUSED" = 0 ]; then
  touch "$DIR/$MARKER"
  port_taken "$PORT" && die "port $PORT is already in use"
  MON_PORT=$(free_port "$PORT")
  mkdir -p "$DIR"/{mon.a,osd.0,rgw,run,log,pids}
  echo "$PORT" >"$DIR/port"
  FSID=$(</proc/sys/kernel/random/uuid)
  OSD_UUID=$(</proc/sys/kernel/random/uuid)

  # Everything under DIR and on 127.0.0.1; no authentication (a loopback test cluster) and quiet
  # logs. A single OSD means pools of size 1 with placement across OSDs, not hosts.
  cat >"$CONF" <<EOF
# Written by scripts/s3-server.sh: a throwaway test cluster. Do not edit.
[global]
fsid = $FSID
mon host = v2:127.0.0.1:$MON_PORT
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv6 = false
ms bind msgr1 = false
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc
keyring = $DIR/keyring
run dir = $DIR/run
admin socket = $DIR/run/\$name.\$pid.asok
crash dir = $DIR/run
log file = $DIR/log/\$name.log
log to stderr = false
err to stderr = false
log to syslog = false
mon cluster log file = $DIR/log/cluster.log
debug ms = 0/0
debug monc = 0/0
debug mon = 0/0
debug paxos = 0/0
debug osd = 0/0
debug auth = 0/0
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
# Each new pool is an osdmap change; at the monitor's default pace (1 s a proposal) the start
# takes ~13 s instead of ~1 s.
paxos propose interval = 0.05
paxos min wait = 0.01
# A nearly full disk must not stop the test cluster: its data lives in RAM.
mon data avail warn = 1
mon data avail crit = 0
mon osd full ratio = 0.99
mon osd backfillfull ratio = 0.99
mon osd nearfull ratio = 0.99
osd failsafe full ratio = 0.995

[mon]
mon data = $DIR/\$name

[osd]
osd data = $DIR/\$name
osd objectstore = memstore
# The capacity the OSD reports (RAM is used only for what is stored).
memstore device bytes = $((4 << 30))
osd scrub load threshold = 2000

[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:$PORT
rgw data = $DIR/rgw
# Path-style requests only (http://127.0.0.1:PORT/BUCKET/KEY).
rgw dns name =
rgw enable usage log = false
rgw enable ops log = false
debug rgw = 1/5
EOF
  export CEPH_CONF=$CONF

  # Run NAME's daemon in the foreground (-f) of its own session, recording its pid. setsid execs in
  # place (a background job of a script leads no process group), so $! is the daemon itself.
  launch() {
    local name=$1
    shift
    setsid "$@" -f -c "$CONF" </dev/null >>"$DIR/log/$name.out" 2>&1 &
    echo $! >"$PIDS/$name.pid"
    disown
  }
  cli() { timeout 30 ceph -c "$CONF" --connect-timeout 20 "$@"; }
  need_alive() { daemon_pid "$1" >/dev/null || die "$1 exited (see $DIR/log/$1.log and $1.out)"; }

  STARTED=1
  say "ceph $(ceph-mon --version | awk '{print $3, $5}'); S3 on 127.0.0.1:$PORT, monitor on :$MON_PORT"

  ceph-authtool --create-keyring "$DIR/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  monmaptool --create --fsid "$FSID" --addv a "[v2:127.0.0.1:$MON_PORT]" "$DIR/monmap" >/dev/null
  ceph-mon -c "$CONF" --mkfs -i a --monmap "$DIR/monmap" --keyring "$DIR/keyring" \
    >"$DIR/log/mon-mkfs.out" 2>&1 || die "ceph-mon --mkfs failed"
  # The OSD's store can be made before any monitor runs (its fsid comes from the config).
  ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$OSD_UUID" --no-mon-config \
    >"$DIR/log/osd-mkfs.out" 2>&1 || die "ceph-osd --mkfs failed"
  launch mon.a ceph-mon -i a
  say "monitor started"

  OSD_ID=$(cli osd new "$OSD_UUID") || die "ceph osd new failed (monitor not answering?)"
  [ "$OSD_ID" = 0 ] || die "the monitor gave the OSD id '$OSD_ID', expected 0"
  launch osd.0 ceph-osd -i 0
  say "osd started"

  # radosgw-admin and radosgw block until the OSD serves its placement groups, so no separate wait.
  timeout 60 radosgw-admin -c "$CONF" user create --uid=sysroot-test --display-name='sysroot tests' \
    --access-key="$ACCESS_KEY" --secret-key="$SECRET_KEY" >"$DIR/log/user-create.out" 2>&1 ||
    { need_alive osd.0; need_alive mon.a; die "radosgw-admin user create failed"; }
  say "S3 user created"

  launch rgw radosgw -n client.rgw
  for ((i = 0; i < 600; i++)); do
    s3_answers && break
    need_alive rgw
    sleep 0.05
  done
  s3_answers || die "radosgw does not answer on 127.0.0.1:$PORT after 30 s"
  say "S3 answers on http://127.0.0.1:$PORT"
fi

if [ -n "$BUCKET" ]; then
  # curl signs with SigV4 but omits x-amz-content-sha256, which radosgw requires: send the hash
  # of the empty body.
  code=$(http_status -X PUT --aws-sigv4 "aws:amz:$REGION:s3" -u "$ACCESS_KEY:$SECRET_KEY" \
    -H 'x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855' \
    "http://127.0.0.1:$PORT/$BUCKET")
  case $code in
    200) say "bucket $BUCKET created" ;;
    409) say "bucket $BUCKET already exists" ;;
    *) die "creating bucket $BUCKET: HTTP $code" ;;
  esac
  echo "$BUCKET" >"$DIR/bucket"
elif [ -f "$DIR/bucket" ]; then
  BUCKET=$(<"$DIR/bucket")
fi

if [ -n "$OWNER" ]; then
  if [ "$REUSED" = 1 ]; then
    say "reused server: -w $OWNER ignored (it stops with whatever started it)"
  else
    # The trailing slash makes the watcher's command line name "$DIR/", as the daemons' do.
    setsid bash "$SELF" watch -d "$DIR/" -w "$OWNER:$(start_time "$OWNER")" \
      </dev/null >>"$DIR/log/watch.out" 2>&1 &
    echo $! >"$PIDS/watch.pid"
    disown
    say "will stop by itself once process $OWNER exits"
  fi
fi

STARTED=0
say "ready"
print_env
