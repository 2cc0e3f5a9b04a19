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

# signup_counts_verify STRICT STATS EXPECT: events.signup.total and every day exact, no extra
# day, unique users per day within 2% (HyperLogLog); with STRICT = true also no dead letters and
# no failed signup_counters runs. Fails naming every wrong counter.
signup_counts_verify() {
  local errors
  errors="$(jq -nr --argjson strict "$1" --slurpfile s "$2" --slurpfile e "$3" '
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
    (select($strict) | if ($s.dead_lettered // null) != 0 then "dead_lettered = \($s.dead_lettered), expected 0" else empty end),
    (select($strict) | if ($s.handlers.signup_counters.failed // null) != 0
       then "handlers.signup_counters.failed = \($s.handlers.signup_counters.failed), expected 0" else empty end)
  ')" || fail "jq could not evaluate the stats $2"
  if [ -n "$errors" ]; then
    echo "usher stats: $(cat "$2")" >&2
    echo "expected:    $(cat "$3")" >&2
    fail "counters wrong:"$'\n'"$errors"
  fi
}

# check_counts STATS EXPECT: events.signup.total and every day exact, no extra day, unique
# users per day within 2% (HyperLogLog), no dead letters, no failed handler runs.
check_counts() {
  signup_counts_verify true "$1" "$2"
  log "counters exact: $(jq -c '.events.signup' "$1"), unique $(jq -c '.unique_users.signup' "$1")"
}

# check_signup_counts STATS EXPECT: like check_counts, without its dead-letter/failure checks.
check_signup_counts() {
  signup_counts_verify false "$1" "$2"
  log "counters exact: $(jq -c '.events.signup' "$1")"
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

# --- Helpers for the handler-failure tests (retries, Retry-After, dead letters, kill -9) ----
# Added for issue 3; none of the helpers above depend on them.

IT_SLACK_PATH=/services/T0001/B0001/hook
IT_CRM_PATH=/crm/v3/objects/contacts/batch/upsert
IT_WATCH=()   # pids wait_until checks on every round (a dead usher fails the wait at once)

# start_sinks: this test's own SMTP and HTTP sinks (tests/harness/sinks) in $T/sinks, stopped
# by the EXIT trap; sources their env.sh (SMTP_URL, SMTP_MAILDIR, HTTP_SINK_URL, HTTP_SINK_LOG..).
# `SINKS_SMTP_AUTH=user:password start_sinks` makes the SMTP sink require AUTH. The trap first
# evals $IT_EXTRA_CLEANUP (if set when the test exits), then stops the sinks, then it_cleanup.
start_sinks() {
  IT_SINKS_DIR="$T/sinks"
  # set +e first: under errexit a failing "(exit $rc)" would end the trap before it_cleanup,
  # leaving usher running and its log unprinted whenever the test fails.
  trap 'rc=$?; set +e; [ -z "${IT_EXTRA_CLEANUP:-}" ] || eval "$IT_EXTRA_CLEANUP"; "$SRC_DIR/tests/harness/sinks" stop "$IT_SINKS_DIR" >/dev/null 2>&1; (exit $rc); it_cleanup' EXIT
  "$SRC_DIR/tests/harness/sinks" start "$IT_SINKS_DIR" 2>"$T/sinks.start.err" ||
    fail "tests/harness/sinks start failed: $(cat "$T/sinks.start.err")"
  # shellcheck disable=SC1091
  . "$IT_SINKS_DIR/env.sh"
}

# conf_set FILE SECTION KEY VALUE: KEY = VALUE in [SECTION] of FILE, replacing the key's line in
# that section or adding it at the section's end (the config rejects duplicate keys).
conf_set() {
  local file="$1" sect="$2" key="$3" val="$4"
  awk -v s="[$sect]" -v k="$key" -v v="$val" '
    function put() { if (!done) { print k " = " v; done = 1 } }
    /^\[/ { if (insect) put(); insect = ($0 == s) }
    { if (insect && index($0, k " =") == 1) { put(); next } print }
    END { if (insect) put(); if (!done) exit 1 }
  ' "$file" >"$file.tmp" || fail "conf_set: no section [$sect] in $file"
  mv "$file.tmp" "$file"
}

# check_config FILE: usher check-config must accept FILE.
check_config() {
  "$USHER_BIN" check-config -c "$1" >/dev/null 2>"$T/check.err" ||
    fail "usher check-config rejected $1: $(cat "$T/check.err")"
}

# handler_sections [HANDLER...]: prints the config sections of welcome_email, slack_notify and
# crm_sync (HubSpot, token $IT_CRM_TOKEN or crm-token-NAME), or of the ones named, pointed at
# this test's sinks (start_sinks first).
handler_sections() {
  local h
  [ $# -gt 0 ] || set -- welcome_email slack_notify crm_sync
  for h in "$@"; do
    case "$h" in
      welcome_email) cat <<EOC

[handler.welcome_email]
smtp_url = $SMTP_URL
from = welcome@example.com
from_name = Example Team
template_text = $SRC_DIR/config/templates/welcome.txt
template_html = $SRC_DIR/config/templates/welcome.html
EOC
        ;;
      slack_notify) cat <<EOC

[handler.slack_notify]
webhook_url = $HTTP_SINK_URL$IT_SLACK_PATH
EOC
        ;;
      crm_sync) cat <<EOC

[handler.crm_sync]
provider = hubspot
url = $HTTP_SINK_URL
token = ${IT_CRM_TOKEN:-crm-token-$IT_NAME}
EOC
        ;;
      *) fail "handler_sections: unknown handler $h" ;;
    esac
  done
}

# handlers_config FILE [HANDLER...]: write_config FILE plus handler_sections [HANDLER...].
# Adjust with conf_set, then check_config.
handlers_config() {
  local file="$1"
  shift
  write_config "$file"
  handler_sections "$@" >>"$file"
  check_config "$file"
}

# http_mode JSON: replace the HTTP sink's fault mode (tests/servers/README.md).
http_mode() {
  local out
  out="$(curl -sS -f -X POST -d "$1" "$HTTP_SINK_URL/_control/mode" 2>&1)" ||
    fail "HTTP sink refused mode $1: $out"
}

# http_reset: HTTP sink back to normal answers (the request log is kept).
http_reset() {
  curl -sS -f -X POST -d '{}' "$HTTP_SINK_URL/_control/reset" >/dev/null 2>&1 ||
    fail "HTTP sink reset failed"
}

# http_count PATH STATUS: requests to PATH answered STATUS so far (STATUS "any": all of them).
http_count() {
  jq -s --arg p "$1" --arg s "$2" \
    '[.[] | select(.path == $p and ($s == "any" or (.status | tostring) == $s))] | length' \
    "$HTTP_SINK_LOG"
}

# mail_count: messages the SMTP sink stored so far.
mail_count() {
  if [ -f "$SMTP_MAILDIR/index.jsonl" ]; then wc -l <"$SMTP_MAILDIR/index.jsonl"; else echo 0; fi
}

# smtp_stats NAME...: the SMTP sink's counters NAME... (its /_control/stats), space-separated.
smtp_stats() {
  curl -fsS "$SMTP_CONTROL_URL/_control/stats" |
    jq -r '[.stats[$ARGS.positional[]] | tostring] | join(" ")' --args "$@"
}

# redis_count PATTERN: keys matching PATTERN (SCAN, so it never blocks Redis).
redis_count() {
  local keys
  keys="$(redis-cli -u "$REDIS_URL" --scan --pattern "$1" 2>&1)" || fail "redis-cli --scan failed: $keys"
  if [ -z "$keys" ]; then echo 0; else wc -l <<<"$keys"; fi
}

# wait_until TIMEOUT DESCRIPTION COMMAND...: poll COMMAND (every 0.25 s) until it succeeds;
# fails after TIMEOUT seconds naming DESCRIPTION and $WAIT_STATE (which COMMAND may set to say
# what it saw), or at once if a pid in IT_WATCH has exited.
WAIT_STATE=""
wait_until() {
  local timeout="$1" what="$2" deadline
  shift 2
  deadline=$((SECONDS + timeout))
  WAIT_STATE=""
  while ! "$@"; do
    [ "${#IT_WATCH[@]}" -eq 0 ] || require_alive "${IT_WATCH[@]}"
    [ "$SECONDS" -lt "$deadline" ] || fail "$what: not reached within ${timeout}s (last seen: ${WAIT_STATE:-n/a})"
    sleep 0.25
  done
}

# sink_tally OUT: what the sinks received, per user e-mail address, as JSON in OUT:
#   {"mail": {addr: n}, "mail_total": n,
#    "slack": {"<status>": {addr: n}}, "crm": {"<status>": {addr: n}}, "other_requests": n,
#    "slack_seq": [[ts, status, addr], ...], "crm_seq": [...]}   (in log order)
# The Slack address is the one in "<...>" of the text; the CRM one is inputs[0].id.
sink_tally() {
  /usr/bin/python3 - "$SMTP_MAILDIR" "$HTTP_SINK_LOG" "$IT_SLACK_PATH" "$IT_CRM_PATH" >"$1" <<'PY' ||
import json, os, sys
maildir, log, slack_path, crm_path = sys.argv[1:5]
out = {"mail": {}, "mail_total": 0, "slack": {}, "crm": {}, "other_requests": 0,
       "slack_seq": [], "crm_seq": []}
idx = os.path.join(maildir, "index.jsonl")
if os.path.exists(idx):
    for line in open(idx):
        e = json.loads(line)
        out["mail_total"] += 1
        for a in e["rcpt_tos"]:
            out["mail"][a] = out["mail"].get(a, 0) + 1
for line in open(log):
    r = json.loads(line)
    addr = None
    try:
        if r["path"] == slack_path:
            t = json.loads(r["body"])["text"]
            addr = t.split("<", 1)[1].split(">", 1)[0] if "<" in t else "?"
            kind = "slack"
        elif r["path"] == crm_path:
            addr = json.loads(r["body"])["inputs"][0]["id"]
            kind = "crm"
        else:
            out["other_requests"] += 1
            continue
    except (ValueError, KeyError, IndexError, TypeError):
        addr = "?unparsable"
    st = str(r["status"])
    m = out[kind].setdefault(st, {})
    m[addr] = m.get(addr, 0) + 1
    out[kind + "_seq"].append([r["ts"], r["status"], addr])
json.dump(out, sys.stdout)
PY
    fail "could not tally the sinks' records"
}

# check_once TALLY JQ_PATH N SEED WHAT: the map at JQ_PATH of TALLY (address -> count) holds
# exactly the testkit users user0..user(N-1) (seed SEED), each once.
check_once() {
  local errs
  errs="$(jq -r --argjson n "$3" --arg s "$4" --arg what "$5" '
    ('"$2"' // {}) as $m |
    ([range(0; $n) | "user\(.).s\($s)@example.com"]) as $want |
    ($want | map({(.): true}) | add // {}) as $wset |
    ([$want[] | select(($m[.] // 0) == 0)]) as $missing |
    ([$m | to_entries[] | select(.value > 1) | "\(.key) x\(.value)"]) as $dups |
    ([$m | keys[] | select($wset[.] == null)]) as $extra |
    (if ($missing | length) > 0 then "\($what): \($missing | length) of \($n) users missing, e.g. \($missing[0:3])" else empty end),
    (if ($dups | length) > 0 then "\($what): \($dups | length) users more than once, e.g. \($dups[0:3])" else empty end),
    (if ($extra | length) > 0 then "\($what): unexpected addresses \($extra[0:3])" else empty end)
  ' "$1")" || fail "jq could not read the tally $1"
  [ -z "$errs" ] || fail "$errs"
  log "$5: each of the $3 users exactly once"
}

# topic_end_total: sum of the log-end offsets of this test's topic.
topic_end_total() {
  offsets_table | awk '$1 != "lag" { s += $3 } END { print s + 0 }'
}
