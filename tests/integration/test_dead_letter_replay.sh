#!/usr/bin/env bash
# A permanent handler failure dead-letters the record once and lets the partition move on; a
# replay after the fix delivers what failed and nothing else.
#  1. The HTTP sink answers 404 to the CRM path only. Each of N signups: one CRM request (404 is
#     not retried), one dead letter with usher-reason http_404, usher-handler crm_sync,
#     usher-attempts 1, usher-topic/partition/offset of the source record (value and key
#     unchanged); the other handlers ran exactly once (one e-mail, one Slack post answered 200
#     per user, counters exact); usher stays up and commits the log end.
#  2. Sink reset; `usher dlq replay -c CONF --handler crm_sync` prints "replayed N"; the running
#     usher consumes the N replayed records: N CRM upserts answered 200 (one per user), no second
#     e-mail or Slack post (idempotency markers), no new dead letter, committed at the log end.
#  3. A second replay replays nothing ("replayed 0", N "replayed before"), adds no record.
#  4. The counters still count each signup once: a replay is a redelivery of the same events.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
it_init dead_letter_replay

N=60 SEED=47
start_sinks
create_topics 3
tk produce-signups -b "$KAFKA_BOOTSTRAP" -t "$TOPIC" -n $N -u $N --seed $SEED >"$T/expect.json"
CONF="$T/usher.conf"
handlers_config "$CONF"
conf_set "$CONF" usher retry_initial_ms 50
conf_set "$CONF" usher retry_max_ms 1000
check_config "$CONF"

http_mode "{\"status\":404,\"paths\":[\"$IT_CRM_PATH\"]}"
usher_start "$CONF" "$T/usher.log"
IT_WATCH=("$USHER_PID")
wait_at_end 120 "$USHER_PID"

# --- 1. dead letters ---------------------------------------------------------------------
tk read-topic -b "$KAFKA_BOOTSTRAP" -t "$TOPIC" --timeout 60 >"$T/source.jsonl"
tk read-topic -b "$KAFKA_BOOTSTRAP" -t "$DLQ" --timeout 60 >"$T/dlq.jsonl"
[ "$(wc -l <"$T/source.jsonl")" = $N ] || fail "source topic has $(wc -l <"$T/source.jsonl") records, expected $N"
errs="$(jq -rn --arg topic "$TOPIC" --slurpfile src "$T/source.jsonl" --slurpfile dl "$T/dlq.jsonl" '
  ($src | map({key: "\(.partition):\(.offset)", value: .}) | from_entries) as $by |
  (if ($dl | length) != ($src | length) then "\($dl | length) dead letters for \($src | length) records" else empty end),
  ($dl | group_by(.headers["usher-partition"] + ":" + .headers["usher-offset"])[] | select(length > 1)
     | "record \(.[0].headers["usher-partition"]):\(.[0].headers["usher-offset"]) dead-lettered \(length) times"),
  ($dl[] | .headers as $h | "\($h["usher-partition"]):\($h["usher-offset"])" as $k | $by[$k] as $s |
    (if $h["usher-reason"] != "http_404" then "\($k): usher-reason \($h["usher-reason"])" else empty end),
    (if $h["usher-handler"] != "crm_sync" then "\($k): usher-handler \($h["usher-handler"])" else empty end),
    (if $h["usher-attempts"] != "1" then "\($k): usher-attempts \($h["usher-attempts"]), expected 1 (404 is permanent)" else empty end),
    (if $h["usher-topic"] != $topic then "\($k): usher-topic \($h["usher-topic"])" else empty end),
    (if $s == null then "dead letter names \($k), which is no record of the topic"
     elif $s.value_sha256 != .value_sha256 or $s.key != .key then "\($k): value or key changed" else empty end),
    (if (($h["usher-first-failure"] // "") | test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z$")) and
        (($h["usher-last-failure"] // "") | test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z$"))
     then empty else "\($k): first/last failure \($h["usher-first-failure"]) / \($h["usher-last-failure"])" end))
' | head -20)" || fail "jq could not check the dead letters"
[ -z "$errs" ] || fail "dead letters wrong:"$'\n'"$errs"
log "$N dead letters, one per record: http_404 in crm_sync, attempts 1, source coordinates, value and key kept"

sink_tally "$T/tally1.json"
check_once "$T/tally1.json" '.crm["404"]' $N $SEED "CRM requests answered 404 (not retried)"
[ "$(jq '.crm | keys' -c "$T/tally1.json")" = '["404"]' ] || fail "CRM answers other than 404 before the fix: $(jq -c '.crm | keys' "$T/tally1.json")"
check_once "$T/tally1.json" '.slack["200"]' $N $SEED "Slack posts answered 200"
[ "$(jq -c '.slack | keys' "$T/tally1.json")" = '["200"]' ] || fail "Slack answers other than 200: $(jq -c '.slack | keys' "$T/tally1.json")"
check_once "$T/tally1.json" '.mail' $N $SEED "welcome e-mails"
stats_json "$CONF" "$T/stats1.json"
check_signup_counts "$T/stats1.json" "$T/expect.json"
got="$(jq -c '{dead_lettered, r: .dead_letter_reasons.http_404, h: .handlers.crm_sync.dead_lettered}' "$T/stats1.json")"
[ "$got" = "{\"dead_lettered\":$N,\"r\":$N,\"h\":$N}" ] ||
  fail "stats dead_lettered / reasons.http_404 / crm_sync.dead_lettered = $got, expected $N each"
require_alive "$USHER_PID"

# --- 2. replay after the fix ---------------------------------------------------------------
http_reset
slack_before="$(http_count "$IT_SLACK_PATH" any)"
"$USHER_BIN" dlq replay -c "$CONF" --handler crm_sync >"$T/replay1.out" 2>"$T/replay1.err" ||
  fail "usher dlq replay exited $?: $(tail -5 "$T/replay1.err")"
summary="$(tail -n 1 "$T/replay1.out")"
log "replay: $summary"
[[ "$summary" =~ ^replayed\ ([0-9]+)\  ]] || fail "usher dlq replay printed no 'replayed N' summary: $summary"
[ "${BASH_REMATCH[1]}" = $N ] || fail "usher dlq replay replayed ${BASH_REMATCH[1]}, expected $N: $summary"
[ "$(topic_end_total)" = $((2 * N)) ] || fail "topic holds $(topic_end_total) records after the replay, expected $((2 * N))"

crm_done() {
  WAIT_STATE="CRM 200s $(http_count "$IT_CRM_PATH" 200)"
  [ "$(http_count "$IT_CRM_PATH" 200)" -ge $N ]
}
wait_until 120 "$N CRM upserts after the replay" crm_done
wait_at_end 120 "$USHER_PID"
sink_tally "$T/tally2.json"
check_once "$T/tally2.json" '.crm["200"]' $N $SEED "CRM upserts answered 200 after the replay"
check_once "$T/tally2.json" '.mail' $N $SEED "welcome e-mails after the replay (none resent)"
check_once "$T/tally2.json" '.slack["200"]' $N $SEED "Slack posts after the replay (none resent)"
[ "$(http_count "$IT_SLACK_PATH" any)" = "$slack_before" ] ||
  fail "$(( $(http_count "$IT_SLACK_PATH" any) - slack_before )) Slack requests after the replay, expected none"
d="$(dlq_count)"
[ "$d" = $N ] || fail "$d records on the dead-letter topic after the replay, expected still $N"
require_alive "$USHER_PID"

# --- 3. nothing left to replay ---------------------------------------------------------------
"$USHER_BIN" dlq replay -c "$CONF" --handler crm_sync >"$T/replay2.out" 2>"$T/replay2.err" ||
  fail "second usher dlq replay exited $?: $(tail -5 "$T/replay2.err")"
summary="$(tail -n 1 "$T/replay2.out")"
log "second replay: $summary"
[[ "$summary" =~ ^replayed\ 0\ record.*\ $N\ were\ replayed\ before ]] ||
  fail "second usher dlq replay: '$summary', expected 'replayed 0 record(s) ... $N were replayed before'"
[ "$(topic_end_total)" = $((2 * N)) ] || fail "topic holds $(topic_end_total) records after the second replay, expected $((2 * N))"

# --- 4. counters: each signup counted once, replay or not ------------------------------------
stats_json "$CONF" "$T/stats2.json"
check_signup_counts "$T/stats2.json" "$T/expect.json"

usher_stop "$USHER_PID" 15
[ "$STOP_RC" = 0 ] || fail "usher exited $STOP_RC after SIGTERM, expected 0"
it_pass
