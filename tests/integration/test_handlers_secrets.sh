#!/usr/bin/env bash
# Secrets stay out of usher's output: with an SMTP password (the sink requires AUTH), a CRM
# bearer token and a Slack webhook URL configured, and log_level = debug, a run that also goes
# through retries (the SMTP sink answers 451 three times, the HTTP sink 503 to three CRM calls)
# delivers everything — so the secrets were really used — and none of the three strings
# appears anywhere in usher's stdout/stderr, nor in check-config's. The SMTP sink offers no
# PIPELINING here, so usher sends one command at a time (and no command arrives pipelined, and
# no message by BDAT, although CHUNKING is offered).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
it_init handlers_secrets

N=20
SMTP_USER="usher-mailer"
SMTP_PASS="pw-$(od -An -N8 -tx8 /dev/urandom | tr -d ' \n')"
CRM_TOKEN="pat-na1-$(od -An -N8 -tx8 /dev/urandom | tr -d ' \n')"
HOOK_SECRET="XS$(od -An -N8 -tx8 /dev/urandom | tr -d ' \n')"
SINKS_SMTP_NO_PIPELINING=1 SINKS_SMTP_AUTH="$SMTP_USER:$SMTP_PASS" start_sinks
[ "${SMTP_AUTH_USER:-}" = "$SMTP_USER" ] || fail "the SMTP sink did not turn AUTH on"

create_topics 3
tk produce-signups -b "$KAFKA_BOOTSTRAP" -t "$TOPIC" -n $N -u $N --seed 47 >/dev/null

handlers_config "$T/usher.conf"
conf_set "$T/usher.conf" usher retry_initial_ms 50
conf_set "$T/usher.conf" usher retry_max_ms 500
conf_set "$T/usher.conf" usher log_level debug
# The secrets come from the environment, as the README recommends.
conf_set "$T/usher.conf" handler.welcome_email username "$SMTP_USER"
# shellcheck disable=SC2016 # ${...} is for usher to expand (here and below)
conf_set "$T/usher.conf" handler.welcome_email password '${TEST_SMTP_PASSWORD}'
conf_set "$T/usher.conf" handler.welcome_email template_html ''
# shellcheck disable=SC2016
conf_set "$T/usher.conf" handler.slack_notify webhook_url '${TEST_SLACK_WEBHOOK}'
# shellcheck disable=SC2016
conf_set "$T/usher.conf" handler.crm_sync token '${TEST_CRM_TOKEN}'
export TEST_SMTP_PASSWORD="$SMTP_PASS" TEST_CRM_TOKEN="$CRM_TOKEN"
export TEST_SLACK_WEBHOOK="$HTTP_SINK_URL/services/T0001/B0001/$HOOK_SECRET"
"$USHER_BIN" check-config -c "$T/usher.conf" >"$T/check.out" 2>&1 ||
  fail "check-config rejected the config: $(cat "$T/check.out")"

# Faults, so that the retry and error paths log too.
curl -fsS -X POST -d '{"tempfail_count": 3}' "$SMTP_CONTROL_URL/_control/mode" >/dev/null ||
  fail "cannot set the SMTP sink's mode"
curl -fsS -X POST -d '{"status": 503, "count": 3, "paths": ["/crm"]}' "$HTTP_SINK_URL/_control/mode" >/dev/null ||
  fail "cannot set the HTTP sink's mode"

usher_start "$T/usher.conf" "$T/usher.log"
wait_at_end 90 "$USHER_PID"
usher_stop "$USHER_PID" 15
[ "$STOP_RC" = 0 ] || fail "usher exited $STOP_RC after SIGTERM, expected 0"

# The secrets were used: every mail arrived authenticated, every CRM call carried the token,
# every Slack post went to the secret path.
mails="$(wc -l <"$SMTP_MAILDIR/index.jsonl")"
authed="$(jq -s --arg u "$SMTP_USER" 'map(select(.auth_login == $u)) | length' "$SMTP_MAILDIR/index.jsonl")"
[ "$mails" = $N ] && [ "$authed" = $N ] || fail "$mails e-mails stored, $authed authenticated as $SMTP_USER; expected $N and $N"
crm_ok="$(jq -s --arg a "Bearer $CRM_TOKEN" 'map(select(.path | endswith("/batch/upsert"))
  | select(.status == 200 and .headers.authorization == $a)) | length' "$HTTP_SINK_LOG")"
crm_503="$(jq -s 'map(select(.status == 503)) | length' "$HTTP_SINK_LOG")"
[ "$crm_ok" = $N ] && [ "$crm_503" = 3 ] || fail "CRM: $crm_ok accepted upserts with the token and $crm_503 injected 503s; expected $N and 3"
slack_ok="$(jq -s --arg p "/services/T0001/B0001/$HOOK_SECRET" 'map(select(.path == $p and .status == 200)) | length' "$HTTP_SINK_LOG")"
[ "$slack_ok" = $N ] || fail "$slack_ok Slack posts to the webhook path, expected $N"
read -r tempfailed pipelined bdat < <(smtp_stats tempfailed pipelined bdat)
[ "$tempfailed" = 3 ] || fail "the SMTP sink answered 451 $tempfailed times, expected 3"
[ "$pipelined" = 0 ] || fail "$pipelined SMTP commands arrived pipelined to a sink that does not offer it"
[ "$bdat" = 0 ] || fail "$bdat messages came by BDAT without PIPELINING (usher uses it only with both)"
retried="$(grep -c 'retry\|RETRY\|451\|503' "$T/usher.log" || true)"
log "delivered with the secrets: $mails authenticated e-mails, $crm_ok CRM upserts after 3 x 503, $slack_ok Slack posts after 3 x 451 for mail; $retried log lines about retries"

for s in "$SMTP_PASS" "$CRM_TOKEN" "$HOOK_SECRET"; do
  if grep -qF -- "$s" "$T/usher.log" "$T/check.out"; then
    grep -nF -- "$s" "$T/usher.log" "$T/check.out" | head -5 >&2
    fail "a secret (${s:0:6}...) appears in usher's output"
  fi
done
log "no secret in $(wc -l <"$T/usher.log") lines of usher output (log_level debug)"
it_pass
