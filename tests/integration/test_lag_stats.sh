#!/usr/bin/env bash
# Lag and liveness in `usher stats --json` ([usher] report_interval_ms = 500). 600 signups wait
# on a 6-partition topic; slack_notify posts to an HTTP sink that answers after 40 ms and
# usher runs 2 workers, so the backlog drains over several seconds. While it drains:
# .lag_total > 0, .lag has an entry for each of the 6 partitions, owned by this member, with
# lag = end - committed and end = the partition's real log end, the member is in .members
# with alive = true, and .lag_total never grows (the backlog only shrinks). Once the group has
# committed the log end: .lag_total == 0 and every partition's lag is 0. After SIGTERM the
# member has left .members.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$(dirname "${BASH_SOURCE[0]}")/lib_scale.sh"
it_init lag_stats

N=600 SEED=81 DELAY_MS=40 PARTS=6
start_sinks
create_topics $PARTS
tk produce-signups -b "$KAFKA_BOOTSTRAP" -t "$TOPIC" -n $N -u $N --seed $SEED >"$T/expect.json"
sink_mode "{\"delay_ms\": $DELAY_MS}"
offsets_table >"$T/ends.txt"   # partition committed end (nothing committed yet)
ends_json="$(awk '$1 != "lag" { printf "%s\"%s:%s\": %s", (n++ ? ", " : "{"), t, $1, $3 } END { print "}" }' t="$TOPIC" "$T/ends.txt")"
[ "$(jq '[.[]] | add' <<<"$ends_json")" = $N ] || fail "log ends $ends_json do not add up to $N"

write_config "$T/usher.conf" "$REDIS_URL" "report_interval_ms = 500"
scale_conf_set "$T/usher.conf" workers 2
cat >>"$T/usher.conf" <<EOF

[handler.slack_notify]
webhook_url = $HTTP_SINK_URL/services/T0/B0/lag
EOF
scale_conf_check "$T/usher.conf"
usher_start "$T/usher.conf" "$T/usher.log"
pid=$USHER_PID

# During the backlog: sample every 0.3 s until the group is at the log end.
samples=() seen_backlog=0 prev="" deadline=$((SECONDS + 120))
while :; do
  require_alive "$pid"
  [ "$SECONDS" -lt "$deadline" ] || fail "the backlog did not drain within 120 s (lag samples: ${samples[*]})"
  stats_json "$T/usher.conf" "$T/s.json"
  lt="$(jq '.lag_total // "absent"' "$T/s.json")"
  # A sample counts once every partition's log end is known (right after the assignment a
  # partition may still report end -1 until its first fetch).
  if [ "$lt" != absent ] && [ "$lt" -gt 0 ] &&
     jq -e '(.lag | length) > 0 and ([.lag[] | select(.end < 0)] | length) == 0' "$T/s.json" >/dev/null; then
    errs="$(jq -r --argjson ends "$ends_json" --argjson pid "$pid" --argjson parts $PARTS '
      ([.members | to_entries[] | select(.value.pid == $pid)]) as $me |
      (if ($me | length) != 1 then "member with pid \($pid) not in .members: \(.members | keys)"
       elif $me[0].value.alive != true then "member \($me[0].key) has alive = \($me[0].value.alive)" else empty end),
      (if (.lag | length) != $parts then "\(.lag | length) partitions in .lag, expected \($parts): \(.lag | keys)" else empty end),
      (.lag | to_entries[] |
        (if $ends[.key] == null then "unexpected partition \(.key) in .lag" else empty end),
        (if .value.end != $ends[.key] then "\(.key): end \(.value.end), real log end \($ends[.key])" else empty end),
        (if .value.lag != .value.end - (if .value.committed > 0 then .value.committed else 0 end)
           then "\(.key): lag \(.value.lag) is not end \(.value.end) - committed \(.value.committed)" else empty end),
        (if ($me | length) == 1 and .value.member != $me[0].key then "\(.key): owned by \(.value.member), not \($me[0].key)" else empty end)),
      (if .lag_total != ([.lag[].lag | select(. > 0)] | add) then "lag_total \(.lag_total) is not the sum of the partition lags" else empty end)
    ' "$T/s.json")"
    [ -z "$errs" ] || { jq -c '{lag, lag_total, members}' "$T/s.json" >&2; fail "during the backlog:"$'\n'"$errs"; }
    if [ -n "$prev" ] && [ "$lt" -gt "$prev" ]; then
      fail "lag_total grew from $prev to $lt while the backlog drained (samples: ${samples[*]} $lt)"
    fi
    [ "$lt" -le $N ] || fail "lag_total $lt is more than the $N records produced"
    seen_backlog=$((seen_backlog + 1)) prev=$lt
    samples+=("$lt")
  fi
  [ "$(awk '$1 == "lag" { print $2 }' <<<"$(offsets_table)")" != 0 ] || break
  sleep 0.3
done
log "lag_total while draining (every 0.3 s): ${samples[*]}"
[ "$seen_backlog" -ge 3 ] ||
  fail "usher stats showed a positive lag_total in only $seen_backlog samples (${samples[*]}); expected the backlog to be visible for a while"
wait_at_end 60 "$pid"

# At the end: every partition at lag 0 (the next report, within a second or two).
deadline=$((SECONDS + 15))
while :; do
  require_alive "$pid"
  stats_json "$T/usher.conf" "$T/s.json"
  if jq -e --argjson parts $PARTS --argjson pid "$pid" '
       .lag_total == 0 and (.lag | length) == $parts and ([.lag[] | select(.lag != 0)] | length) == 0
       and ([.members[] | select(.pid == $pid and .alive == true)] | length) == 1' "$T/s.json" >/dev/null; then
    break
  fi
  [ "$SECONDS" -lt "$deadline" ] ||
    fail "at the log end usher stats shows $(jq -c '{lag_total, lag: (.lag | map_values(.lag)), members: (.members | map_values({pid, alive}))}' "$T/s.json"), expected lag_total 0, every partition 0, member alive"
  sleep 0.25
done
log "at the end: $(jq -c '{lag_total, lag: (.lag | map_values(.lag))}' "$T/s.json")"

stats_json "$T/usher.conf" "$T/stats.json"
check_counts "$T/stats.json" "$T/expect.json"
usher_stop "$pid" 15
[ "$STOP_RC" = 0 ] || fail "usher exited $STOP_RC after SIGTERM, expected 0"
stats_json "$T/usher.conf" "$T/s.json"
jq -e --argjson pid "$pid" '[.members[]? | select(.pid == $pid)] | length == 0' "$T/s.json" >/dev/null ||
  fail "after SIGTERM the member is still in .members: $(jq -c .members "$T/s.json")"
[ "$(jq .lag_total "$T/s.json")" = 0 ] || fail "after SIGTERM lag_total = $(jq .lag_total "$T/s.json"), expected 0"
it_pass
