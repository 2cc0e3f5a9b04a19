#!/usr/bin/env bash
# Every file in tests/fixtures/bad/ (plus a Kafka tombstone) on one partition, then one valid
# signup behind them: each bad record lands on the dead-letter topic with its machine-readable
# usher-reason, its exact bytes and key, and its original coordinates; 17-unicode-idn-emails is
# accepted; the valid signup behind them is counted (nothing stalls the partition); usher
# never exits.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
it_init bad_fixtures

KEY="bad-fixtures-key"
create_topics 1

# Expected usher-reason per fixture (an extended regex over the whole header value).
declare -A want=(
  [01-truncated.json]='parse_error'
  [02-wrong-types.logto.json]='schema_error'
  [03-missing-user-id.auth0-user.json]='missing_user_id'
  [05-deep-nesting-100k.json]='max_depth_exceeded'
  [06-huge-wide-object.json]='message_too_large|too_many_members'
  [07-invalid-utf8.json]='invalid_utf8'
  [09-empty.json]='empty_value'
  [10-null.json]='null_value'
  [12-2mb-email.json]='field_too_long|message_too_large'
  [13-duplicate-keys.json]='duplicate_key'
  [15-unknown-event-type.logto.json]='unsupported_event'
  [18-nul-bytes.json]='.+'
  [20-trailing-garbage.json]='trailing_data'
  [22-nan-infinity-literals.json]='parse_error'
  [24-cloudevent-missing-required.json]='schema_error'
  [TOMBSTONE]='empty_value|null_value'
)

# Produce in a known order; offset i = i-th record (fresh single-partition topic).
order=()
for f in "$FIXTURES"/bad/*; do
  b="$(basename "$f")"
  [ "$b" = 17-unicode-idn-emails.json ] || [ -n "${want[$b]:-}" ] ||
    fail "fixture $b has no expected reason in this test; add it"
  tk produce-file -b "$KAFKA_BOOTSTRAP" -t "$TOPIC" -f "$f" -k "$KEY"
  order+=("$b")
done
tk produce-file -b "$KAFKA_BOOTSTRAP" -t "$TOPIC" --tombstone -k "$KEY"
order+=(TOMBSTONE)
tk produce-file -b "$KAFKA_BOOTSTRAP" -t "$TOPIC" -k "$KEY" -H usher-event-type=signup \
   -f "$FIXTURES/auth0-action/post-user-registration.user.json"
order+=(VALID)
[ "${#order[@]}" -ge 18 ] || fail "expected at least 16 bad fixtures, found $((${#order[@]} - 2))"

write_config "$T/usher.conf"
usher_start "$T/usher.conf" "$T/usher.log"
wait_at_end 180 "$USHER_PID"
require_alive "$USHER_PID"

tk read-topic -b "$KAFKA_BOOTSTRAP" -t "$DLQ" --timeout 60 >"$T/dlq.jsonl"
errors=()
n_expected=0
for i in "${!order[@]}"; do
  b="${order[$i]}"
  case "$b" in VALID|17-unicode-idn-emails.json) continue ;; esac
  n_expected=$((n_expected + 1))
  if [ "$b" = TOMBSTONE ]; then sha=null; else sha="\"$(sha256sum "$FIXTURES/bad/$b" | cut -d' ' -f1)\""; fi
  rec="$(jq -c --arg off "$i" 'select(.headers["usher-offset"] == $off)' "$T/dlq.jsonl")"
  if [ -z "$rec" ]; then errors+=("$b (offset $i): not on the dead-letter topic"); continue; fi
  [ "$(wc -l <<<"$rec")" = 1 ] || { errors+=("$b (offset $i): dead-lettered $(wc -l <<<"$rec") times"); continue; }
  reason="$(jq -r '.headers["usher-reason"] // ""' <<<"$rec")"
  log "$b -> usher-reason=$reason detail=$(jq -r '.headers["usher-detail"] // "" | .[0:100]' <<<"$rec")"
  [[ "$reason" =~ ^(${want[$b]})$ ]] || errors+=("$b: usher-reason '$reason', expected ${want[$b]}")
  [ "$(jq -c .value_sha256 <<<"$rec")" = "$sha" ] || errors+=("$b: value changed on the dead-letter topic")
  [ "$(jq -r .key <<<"$rec")" = "$KEY" ] || errors+=("$b: key changed ($(jq -c .key <<<"$rec"))")
  [ "$(jq -r '.headers["usher-topic"]' <<<"$rec")" = "$TOPIC" ] || errors+=("$b: usher-topic wrong")
  [ "$(jq -r '.headers["usher-partition"]' <<<"$rec")" = 0 ] || errors+=("$b: usher-partition wrong")
  for h in usher-detail usher-handler usher-attempts usher-first-failure usher-last-failure; do
    jq -e --arg h "$h" '.headers | has($h)' <<<"$rec" >/dev/null || errors+=("$b: header $h missing")
  done
  [ -n "$(jq -r '.headers["usher-detail"] // ""' <<<"$rec")" ] || errors+=("$b: usher-detail empty")
  [ -z "$(jq -r '.headers["usher-handler"] // ""' <<<"$rec")" ] ||
    errors+=("$b: usher-handler should be empty for a normalization reject")
done
total_dlq="$(wc -l <"$T/dlq.jsonl")"
[ "$total_dlq" = "$n_expected" ] || errors+=("dead-letter topic has $total_dlq records, expected $n_expected (17-unicode and the valid signup must not be there)")
if [ ${#errors[@]} -gt 0 ]; then
  printf '  %s\n' "${errors[@]}" >&2
  fail "${#errors[@]} dead-letter problems"
fi

stats_json "$T/usher.conf" "$T/stats.json"
got="$(jq '.events.signup.total // null' "$T/stats.json")"
[ "$got" = 2 ] || fail "events.signup.total = $got, expected 2 (17-unicode-idn-emails and the valid signup)"
dl="$(jq '.dead_lettered // null' "$T/stats.json")"
[ "$dl" = "$n_expected" ] || fail "stats dead_lettered = $dl, expected $n_expected"
require_alive "$USHER_PID"
usher_stop "$USHER_PID" 10
[ "$STOP_RC" = 0 ] || fail "usher exited $STOP_RC after SIGTERM, expected 0"
it_pass
