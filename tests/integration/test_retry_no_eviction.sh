#!/usr/bin/env bash
# Handlers retrying for longer than twice max.poll.interval.ms must not get usher evicted from
# its group. The HTTP sink answers 500 to every Slack and CRM request for 25 s while 200 signups
# wait (max.poll.interval.ms = 10000, session.timeout.ms = 6000): usher keeps polling, so there
# is exactly one assignment and no revoke or loss (also at its max_inflight limit of 50), it never exits, and nothing is committed while
# no event can finish. Once the sink recovers every event completes exactly once: 200 Slack posts
# and 200 CRM upserts answered 200 (one per user), 200 e-mails, exact counters, committed at the
# log end, nothing dead-lettered (retry_max_time_ms = 0: the budget never runs out).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
it_init retry_no_eviction

N=200 SEED=41 FAIL_SECS=25 POLL_MS=10000
start_sinks
create_topics 6
tk produce-signups -b "$KAFKA_BOOTSTRAP" -t "$TOPIC" -n $N -u $N --seed $SEED >"$T/expect.json"
[ "$(jq .total "$T/expect.json")" = $N ] || fail "testkit produced $(jq .total "$T/expect.json"), not $N"

CONF="$T/usher.conf"
handlers_config "$CONF"
conf_set "$CONF" kafka max.poll.interval.ms $POLL_MS
conf_set "$CONF" kafka session.timeout.ms 6000
# Fewer slots than records: the poll thread sits at its in-flight limit for the whole failure
# window (the back-pressure path), where it must still poll.
conf_set "$CONF" usher max_inflight 50
conf_set "$CONF" usher retry_initial_ms 200
conf_set "$CONF" usher retry_max_ms 2000
conf_set "$CONF" usher retry_max_attempts 0
conf_set "$CONF" usher retry_max_time_ms 0
check_config "$CONF"
grep -q "^max.poll.interval.ms = $POLL_MS\$" "$CONF" || fail "config lacks max.poll.interval.ms = $POLL_MS"

# Slack and CRM fail from the very first request, until reset.
http_mode "{\"status\":500,\"paths\":[\"$IT_SLACK_PATH\",\"$IT_CRM_PATH\"]}"
usher_start "$CONF" "$T/usher.log"
IT_WATCH=("$USHER_PID")

both_failing() {
  local s c
  s="$(http_count "$IT_SLACK_PATH" 500)" c="$(http_count "$IT_CRM_PATH" 500)"
  WAIT_STATE="Slack 500s $s, CRM 500s $c"
  [ "$s" -gt 0 ] && [ "$c" -gt 0 ]
}
wait_until 90 "first 500 answers to Slack and CRM" both_failing
t0="$(jq -s 'map(select(.status == 500)) | .[0].ts' "$HTTP_SINK_LOG")"
log "first 500 at $t0; keeping the sink failing for ${FAIL_SECS}s (> 2 x max.poll.interval.ms)"

# The failure window itself is the scenario, so this loop is timed, not a synchronization:
# usher must stay alive and must not commit anything (no event can have finished).
until awk -v t0="$t0" -v s="$FAIL_SECS" -v now="$(date +%s.%N)" 'BEGIN { exit !(now >= t0 + s) }'; do
  require_alive "$USHER_PID"
  c="$(committed_total)"
  [ "$c" = 0 ] || fail "usher committed $c offsets while every Slack and CRM request failed"
  sleep 1
done
http_reset
log "sink recovered; Slack 500s $(http_count "$IT_SLACK_PATH" 500), CRM 500s $(http_count "$IT_CRM_PATH" 500)"

wait_at_end 150 "$USHER_PID"

# Group membership: one assignment, never revoked or lost, no poll-interval violation.
assigned="$(grep -c 'assigned [0-9]* partition' "$T/usher.log" || true)"
[ "$assigned" = 1 ] || fail "usher log has $assigned 'assigned' lines, expected exactly 1: $(grep 'assigned [0-9]* partition' "$T/usher.log" | tr '\n' '|')"
if grep -E '(revoking|lost) [0-9]+ partition|rebalance error|MAXPOLL|maximum poll interval|MAX_POLL' "$T/usher.log" >"$T/rebalance.txt"; then
  fail "usher was rebalanced out of its group while handlers retried: $(head -5 "$T/rebalance.txt" | tr '\n' '|')"
fi
log "one assignment, no revoke, no loss, no max.poll.interval violation"

sink_tally "$T/tally.json"
# The fault was real and long: 500s on both paths spanning more than 2 x max.poll.interval.ms.
for kind in slack crm; do
  span="$(jq --arg k "$kind" '[.[$k + "_seq"][] | select(.[1] == 500) | .[0]] | if length > 0 then max - min else 0 end' "$T/tally.json")"
  awk -v s="$span" -v p=$POLL_MS 'BEGIN { exit !(s * 1000 >= 2 * p) }' ||
    fail "$kind 500 answers span only ${span}s, expected at least $((2 * POLL_MS / 1000))s of failing retries"
  log "$kind: $(jq --arg k "$kind" '.[$k]["500"] // {} | add // 0' "$T/tally.json") answers 500 over ${span}s"
done
other="$(jq -r '[.slack, .crm | keys[] | select(. != "200" and . != "500")] | unique | join(",")' "$T/tally.json")"
[ -z "$other" ] || fail "unexpected HTTP statuses in the sink log: $other"
[ "$(jq .other_requests "$T/tally.json")" = 0 ] || fail "$(jq .other_requests "$T/tally.json") requests to unexpected paths"
check_once "$T/tally.json" '.slack["200"]' $N $SEED "Slack posts answered 200"
check_once "$T/tally.json" '.crm["200"]' $N $SEED "CRM upserts answered 200"
check_once "$T/tally.json" '.mail' $N $SEED "welcome e-mails"
[ "$(jq .mail_total "$T/tally.json")" = $N ] || fail "$(jq .mail_total "$T/tally.json") e-mails stored, expected $N"

stats_json "$CONF" "$T/stats.json"
check_counts "$T/stats.json" "$T/expect.json"
d="$(dlq_count)"
[ "$d" = 0 ] || fail "$d records on the dead-letter topic, expected none"
require_alive "$USHER_PID"
usher_stop "$USHER_PID" 15
[ "$STOP_RC" = 0 ] || fail "usher exited $STOP_RC after SIGTERM, expected 0"
it_pass
