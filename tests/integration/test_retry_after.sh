#!/usr/bin/env bash
# Retry-After is honoured. With retry_initial_ms = 50 a retried handler is called again within
# ~100 ms, unless the server says otherwise:
#  A. one signup; the HTTP sink answers the first two Slack and the first two CRM requests
#     429 with "Retry-After: 2": each next attempt on that path arrives at least 2.0 s (and at
#     most 8 s) after the 429 (sink log `ts` for both), the event then completes once (one 200
#     per path, one e-mail: the retry re-runs only the failed handlers).
#  B. control, same config: another signup gets 429 without Retry-After: the next attempt comes
#     within 1.5 s, so the 2 s in A were the header's doing, not the backoff's.
#  C. a third signup: the sink closes the connection without an answer on the first two Slack
#     requests: each is retried and the post then completes once.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
it_init retry_after

SEED=43
SINKS_SMTP_NO_CHUNKING=1 start_sinks  # (the e-mails go by pipelined DATA here)
create_topics 1
CONF="$T/usher.conf"
handlers_config "$CONF"
conf_set "$CONF" usher retry_initial_ms 50
conf_set "$CONF" usher retry_max_ms 5000
conf_set "$CONF" usher retry_max_attempts 0
conf_set "$CONF" usher retry_max_time_ms 0
check_config "$CONF"
tk produce-signups -t "$TOPIC" -n 3 -u 3 --seed $SEED --expect-only >"$T/expect.json"

# check_gaps USER LOW HIGH WHAT: on each of the Slack and CRM paths, USER's requests are some
# 429s then exactly one 200 (the last), and every 429 is followed by the next request on that
# path after LOW..HIGH seconds (sink timestamps).
check_gaps() {
  local user="$1" lo="$2" hi="$3" what="$4" errs
  sink_tally "$T/tally.json"
  errs="$(jq -r --arg u "$user" --argjson lo "$lo" --argjson hi "$hi" '
    ["slack", "crm"][] as $k |
    [.[$k + "_seq"][] | select(.[2] == $u)] as $s |
    ($s | map(.[1])) as $st |
    (if ($st | length) < 2 or $st[-1] != 200 or ($st[:-1] | all(. == 429)) != true
       then "\($k): statuses \($st) for \($u), expected 429s then one 200" else empty end),
    (range(0; ($s | length) - 1) as $i | ($s[$i + 1][0] - $s[$i][0]) as $g |
       select($g < $lo or $g > $hi) |
       "\($k): attempt \($i + 2) came \($g * 1000 | floor) ms after the 429, expected \($lo)..\($hi) s")
  ' "$T/tally.json")" || fail "jq could not read $T/tally.json"
  [ -z "$errs" ] || fail "$what:"$'\n'"$errs"
  log "$what: $(jq -c --arg u "$user" '[.slack_seq, .crm_seq][] | [.[] | select(.[2] == $u)] | [.[0][0] as $t0 | .[] | [((.[0] - $t0) * 1000 | floor), .[1]]]' "$T/tally.json" | tr '\n' ' ')(Slack, CRM: [ms after the first request, status])"
}

# A: Retry-After: 2 on the first two requests of each path.
http_mode "{\"status\":429,\"retry_after\":2,\"count\":4,\"paths\":[\"$IT_SLACK_PATH\",\"$IT_CRM_PATH\"]}"
tk produce-signups -b "$KAFKA_BOOTSTRAP" -t "$TOPIC" -n 3 -u 3 --seed $SEED --start 0 --count 1 >/dev/null
usher_start "$CONF" "$T/usher.log"
IT_WATCH=("$USHER_PID")
wait_at_end 90 "$USHER_PID"
U0="user0.s$SEED@example.com"
check_gaps "$U0" 2.0 8.0 "Retry-After: 2 honoured"
n429="$(http_count "$IT_SLACK_PATH" 429) $(http_count "$IT_CRM_PATH" 429)"
[ "$n429" = "2 2" ] || fail "429 answers (Slack CRM) = $n429, expected 2 2"
[ "$(mail_count)" = 1 ] || fail "$(mail_count) e-mails after phase A, expected 1 (welcome_email must not re-run on the others' retries)"

# B: the same 429s without Retry-After: usher's own backoff (50 ms initial) is much shorter.
http_mode "{\"status\":429,\"count\":4,\"paths\":[\"$IT_SLACK_PATH\",\"$IT_CRM_PATH\"]}"
tk produce-signups -b "$KAFKA_BOOTSTRAP" -t "$TOPIC" -n 3 -u 3 --seed $SEED --start 1 --count 1 >/dev/null
wait_at_end 90 "$USHER_PID"
check_gaps "user1.s$SEED@example.com" 0 1.5 "control without Retry-After retried sooner"

# C: dropped connections.
http_mode "{\"drop\":true,\"count\":2,\"paths\":[\"$IT_SLACK_PATH\"]}"
tk produce-signups -b "$KAFKA_BOOTSTRAP" -t "$TOPIC" -n 3 -u 3 --seed $SEED --start 2 --count 1 >/dev/null
wait_at_end 90 "$USHER_PID"
n0="$(http_count "$IT_SLACK_PATH" 0)"
[ "$n0" = 2 ] || fail "$n0 Slack requests dropped by the sink, expected 2"

sink_tally "$T/tally.json"
check_once "$T/tally.json" '.slack["200"]' 3 $SEED "Slack posts answered 200"
check_once "$T/tally.json" '.crm["200"]' 3 $SEED "CRM upserts answered 200"
check_once "$T/tally.json" '.mail' 3 $SEED "welcome e-mails"
bdat="$(smtp_stats bdat)"
[ "$bdat" = 0 ] || fail "$bdat messages came by BDAT to a sink that does not offer CHUNKING"
stats_json "$CONF" "$T/stats.json"
check_counts "$T/stats.json" "$T/expect.json"
d="$(dlq_count)"
[ "$d" = 0 ] || fail "$d records on the dead-letter topic, expected none"
usher_stop "$USHER_PID" 15
[ "$STOP_RC" = 0 ] || fail "usher exited $STOP_RC after SIGTERM, expected 0"
it_pass
