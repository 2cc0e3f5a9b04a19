#!/usr/bin/env bash
# A partition whose records cannot finish (the Slack sink answers 500 until told otherwise) is
# reported stuck — in `usher stats` and in the log — once it has lag and no commit progress for
# stuck_after_ms; when the sink recovers it drains, and the report clears.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
it_init stuck_partition
start_sinks

create_topics 1
tk produce-signups -b "$KAFKA_BOOTSTRAP" -t "$TOPIC" -n 20 -u 20 --seed 9 >/dev/null
handlers_config "$T/usher.conf" slack_notify
conf_set "$T/usher.conf" usher report_interval_ms 300
conf_set "$T/usher.conf" usher stuck_after_ms 2000
conf_set "$T/usher.conf" usher retry_max_ms 500
conf_set "$T/usher.conf" usher retry_max_time_ms 0
check_config "$T/usher.conf"
http_mode '{"status": 500}'
usher_start "$T/usher.conf" "$T/usher.log"
IT_WATCH=("$USHER_PID")

stuck() {
  "$USHER_BIN" stats --json -c "$T/usher.conf" >"$T/stats.json" 2>/dev/null || return 1
  WAIT_STATE="$(jq -c '.lag' "$T/stats.json")"
  jq -e --arg p "$TOPIC:0" '.lag[$p].stuck == true and .lag[$p].lag > 0' "$T/stats.json" >/dev/null
}
wait_until 60 "partition $TOPIC:0 reported stuck" stuck
grep -q "\[0\] is stuck" "$T/usher.log" || fail "usher did not log the stuck partition"
[ "$(committed_total)" -lt 20 ] || fail "records were committed while the sink failed"

http_reset
wait_at_end 120 "$USHER_PID"
recovered() {
  "$USHER_BIN" stats --json -c "$T/usher.conf" >"$T/stats.json" 2>/dev/null || return 1
  WAIT_STATE="$(jq -c '.lag' "$T/stats.json")"
  jq -e --arg p "$TOPIC:0" '.lag[$p].stuck == false and .lag[$p].lag == 0' "$T/stats.json" >/dev/null
}
wait_until 30 "partition $TOPIC:0 no longer stuck, lag 0" recovered
usher_stop "$USHER_PID" 10
[ "$STOP_RC" = 0 ] || fail "usher exited $STOP_RC"
it_pass
