# shellcheck shell=bash
# shellcheck disable=SC2153 # USHER_BIN, TESTKIT, ... come from ctest's ENVIRONMENT
# Shared helpers for tests/integration/test_*.sh (sourced, not run).
#
# it_init NAME sets up one test: checks the environment ctest passes (USHER_BIN, TESTKIT,
# ITEST_DIR, FIXTURES, SRC_DIR), sources $ITEST_DIR/env.sh (KAFKA_BOOTSTRAP, REDIS_URL), makes a
# temp dir $T, unique names $TOPIC, $DLQ, $GROUP, $PREFIX, and an EXIT trap that kills every
# usher this test started and prints their logs if the test failed. Every wait here polls a
# condition and has a deadline; every failure names what was expected and what was seen.

set -euo pipefail

IT_NAME=""
IT_PIDS=()
IT_LOGS=()
IT_OK=0

# fail MESSAGE...: print "FAIL integration.NAME: MESSAGE" and exit 1 (the trap cleans up).
fail() {
  echo "FAIL integration.$IT_NAME: $*" >&2
  exit 1
}

log() { echo "[$(date +%H:%M:%S)] $IT_NAME: $*" >&2; }

# alive PID: the process exists and is not a zombie.
alive() {
  [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null || return 1
  local st
  st="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || echo X)"
  [ "$st" != Z ] && [ "$st" != X ]
}

it_cleanup() {
  local rc=$? pid i
  for pid in "${IT_PIDS[@]+"${IT_PIDS[@]}"}"; do
    if alive "$pid"; then kill -TERM "$pid" 2>/dev/null || true; fi
  done
  for pid in "${IT_PIDS[@]+"${IT_PIDS[@]}"}"; do
    for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  done
  if [ -n "${IT_REDIS_DIR:-}" ]; then
    "$SRC_DIR/tests/harness/redis" stop "$IT_REDIS_DIR" "$IT_REDIS_NAME" || true
  fi
  if [ "$IT_OK" != 1 ] || [ "$rc" != 0 ]; then
    for i in "${!IT_LOGS[@]}"; do
      echo "----- usher log ${IT_LOGS[$i]} (last 60 lines) -----" >&2
      tail -n 60 "${IT_LOGS[$i]}" >&2 2>/dev/null || true
    done
    echo "----- test files kept in $T -----" >&2
    [ "$rc" != 0 ] || rc=1
  else
    rm -rf "$T"
  fi
  exit "$rc"
}

it_init() {
  IT_NAME="$1"
  local v
  for v in USHER_BIN TESTKIT ITEST_DIR FIXTURES SRC_DIR; do
    [ -n "${!v:-}" ] || { echo "FAIL integration.$IT_NAME: $v is not set (run through ctest)" >&2; exit 1; }
  done
  [ -f "$ITEST_DIR/env.sh" ] || { echo "FAIL integration.$IT_NAME: no $ITEST_DIR/env.sh (did itest.up run?)" >&2; exit 1; }
  # shellcheck disable=SC1091
  . "$ITEST_DIR/env.sh"
  T="$(mktemp -d "${TMPDIR:-/tmp}/usher-it-$IT_NAME.XXXXXX")"
  trap it_cleanup EXIT
  trap 'exit 130' INT TERM
  command -v jq >/dev/null || fail "jq not found (run scripts/install-deps)"
  [ -x "$TESTKIT" ] || fail "testkit not built: $TESTKIT"
  [ -x "$USHER_BIN" ] || fail "usher binary not built: $USHER_BIN"
  local sfx
  sfx="$(od -An -N4 -tx4 /dev/urandom | tr -d ' \n')"
  TOPIC="it-$IT_NAME-$sfx"
  DLQ="$TOPIC.dlq"
  GROUP="it-$IT_NAME-$sfx"
  PREFIX="it:$IT_NAME:$sfx"
  log "topic $TOPIC, group $GROUP, redis prefix $PREFIX, files in $T"
}

# tk ARGS...: the testkit, failing the test with its message if it fails.
tk() {
  "$TESTKIT" "$@" || fail "usher-testkit $1 failed (exit $?)"
}

# write_config FILE [REDIS_URL] [EXTRA_USHER_LINES]: a config for this test's topic/group.
write_config() {
  local file="$1" url="${2:-$REDIS_URL}" extra="${3:-}"
  cat >"$file" <<EOF
[usher]
workers = 4
max_inflight = 1000
ordering = key
drain_timeout_ms = 8000
commit_interval_ms = 500
log_level = info
$extra

[kafka]
bootstrap.servers = $KAFKA_BOOTSTRAP
group.id = $GROUP
topics = $TOPIC
auto.offset.reset = earliest
session.timeout.ms = 6000
heartbeat.interval.ms = 1000
max.poll.interval.ms = 60000

[redis]
url = $url
key_prefix = $PREFIX

[dlq]
topic = $DLQ

[handler.signup_counters]
events = *
EOF
  local out
  if ! out="$("$USHER_BIN" check-config -c "$file" 2>&1)"; then
    fail "usher check-config rejected the test config $file: $out"
  fi
}

# usher_start CONFIG LOG: start `usher run` in the background; sets USHER_PID.
usher_start() {
  "$USHER_BIN" run -c "$1" >"$2" 2>&1 &
  USHER_PID=$!
  IT_PIDS+=("$USHER_PID")
  IT_LOGS+=("$2")
  log "usher run started (pid $USHER_PID, log $2)"
}

# require_alive PID...: fail (with the exit status) if one of them has exited.
require_alive() {
  local pid rc
  for pid in "$@"; do
    if ! alive "$pid"; then
      rc=0
      wait "$pid" 2>/dev/null || rc=$?
      fail "usher (pid $pid) exited unexpectedly with status $rc"
    fi
  done
}

# offsets_table: prints the testkit offsets table for this group/topic (empty on error).
offsets_table() {
  "$TESTKIT" offsets -b "$KAFKA_BOOTSTRAP" -g "$GROUP" -t "$TOPIC" 2>/dev/null || true
}

# committed_total: sum of committed offsets over the topic's partitions (never-committed = 0).
committed_total() {
  offsets_table | awk '$1 != "lag" && $2 > 0 { s += $2 } END { print s + 0 }'
}

# wait_at_end TIMEOUT PID...: poll until the group has committed the log end on every
# partition; fail if it takes longer than TIMEOUT seconds or a listed usher dies.
wait_at_end() {
  local timeout="$1" deadline table lag
  shift
  deadline=$((SECONDS + timeout))
  while :; do
    [ $# -eq 0 ] || require_alive "$@"
    table="$(offsets_table)"
    lag="$(awk '$1 == "lag" { print $2 }' <<<"$table")"
    if [ "$lag" = 0 ]; then
      log "group at log end: $(tr '\n' ' ' <<<"$table")"
      return 0
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      fail "committed offsets did not reach the log end within ${timeout}s; partition committed end: $(tr '\n' ' ' <<<"$table")"
    fi
    sleep 0.5
  done
}

# usher_stop PID [MAX_SECONDS]: SIGTERM, wait (default 10 s); sets STOP_RC and STOP_SECS;
# fails if it is still running after MAX_SECONDS.
usher_stop() {
  local pid="$1" max="${2:-10}" t0 t1
  t0="$(date +%s%N)"
  kill -TERM "$pid" 2>/dev/null || true
  while alive "$pid"; do
    t1="$(date +%s%N)"
    if [ $(((t1 - t0) / 1000000)) -gt $((max * 1000)) ]; then
      fail "usher (pid $pid) still running ${max}s after SIGTERM"
    fi
    sleep 0.05
  done
  t1="$(date +%s%N)"
  STOP_RC=0
  wait "$pid" 2>/dev/null || STOP_RC=$?
  STOP_SECS="$(awk -v ns=$((t1 - t0)) 'BEGIN { printf "%.2f", ns / 1e9 }')"
  log "usher (pid $pid) exited $STOP_RC ${STOP_SECS}s after SIGTERM"
}

# stats_json CONFIG OUT: `usher stats --json` into OUT, which must be a JSON object.
stats_json() {
  "$USHER_BIN" stats -c "$1" --json >"$2" 2>"$2.err" ||
    fail "usher stats --json failed: $(cat "$2.err")"
  jq -e 'type == "object"' "$2" >/dev/null 2>&1 || fail "usher stats --json printed no JSON object: $(head -c 500 "$2")"
}

# check_counts STATS EXPECT: events.signup.total and every day exact, no extra day, unique
# users per day within 2% (HyperLogLog), no dead letters, no failed handler runs.
check_counts() {
  local errors
  errors="$(jq -nr --slurpfile s "$1" --slurpfile e "$2" '
    ($s[0]) as $s | ($e[0]) as $e |
    ($s.events.signup // {}) as $got |
    def absdiff(a; b): if a > b then a - b else b - a end;
    (if $got.total != $e.total then "events.signup.total = \($got.total), expected \($e.total)" else empty end),
    ($e.days | to_entries[] | select($got.days[.key] != .value)
       | "events.signup.days[\(.key)] = \($got.days[.key]), expected \(.value)"),
    (($got.days // {}) | to_entries[] | select($e.days[.key] == null)
       | "events.signup.days has unexpected day \(.key) = \(.value)"),
    ($e.unique_users | to_entries[] | . as $x | ($s.unique_users.signup[$x.key]) as $a
       | select($a == null or absdiff($a; $x.value) > 0.02 * $x.value)
       | "unique_users.signup[\($x.key)] = \($a), expected \($x.value) +-2%"),
    (if ($s.dead_lettered // null) != 0 then "dead_lettered = \($s.dead_lettered), expected 0" else empty end),
    (if ($s.handlers.signup_counters.failed // null) != 0
       then "handlers.signup_counters.failed = \($s.handlers.signup_counters.failed), expected 0" else empty end)
  ')" || fail "jq could not evaluate the stats $1"
  if [ -n "$errors" ]; then
    echo "usher stats: $(cat "$1")" >&2
    echo "expected:    $(cat "$2")" >&2
    fail "counters wrong:"$'\n'"$errors"
  fi
  log "counters exact: $(jq -c '.events.signup' "$1"), unique $(jq -c '.unique_users.signup' "$1")"
}

# create_topics PARTITIONS: this test's topic and its dead-letter topic (8 MiB records).
create_topics() {
  tk create-topic -b "$KAFKA_BOOTSTRAP" -t "$TOPIC" -p "$1" --max-message-bytes 8388608
  tk create-topic -b "$KAFKA_BOOTSTRAP" -t "$DLQ" -p 1 --max-message-bytes 8388608
}

# dlq_count: number of records in this test's dead-letter topic.
dlq_count() {
  "$TESTKIT" read-topic -b "$KAFKA_BOOTSTRAP" -t "$DLQ" --timeout 30 | wc -l
}

it_pass() {
  IT_OK=1
  log "PASS"
}
