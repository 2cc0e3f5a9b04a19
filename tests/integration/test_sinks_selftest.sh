#!/usr/bin/env bash
# Self-test of the test servers (tests/servers/*.py via tests/harness/sinks), driven by the curl
# CLI: HTTP logging, keep-alive, fault modes (status/count, Retry-After, drop, fail_ratio,
# delay), HubSpot/Slack default answers, concurrency; SMTP storage, AUTH (runtime mode and
# start-up option), 451 by count and by time window, 550 by recipient pattern, DATA delay.
# Uses its own sink directory (never the shared $ITEST_DIR); needs no Kafka and no usher build,
# so it also runs by hand:  bash tests/integration/test_sinks_selftest.sh
set -euo pipefail

SRC_DIR="${SRC_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
SINKS="$SRC_DIR/tests/harness/sinks"
NAME=sinks_selftest
OK=0

fail() { echo "FAIL integration.$NAME: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] $NAME: $*" >&2; }

command -v curl >/dev/null || fail "curl not found (run scripts/install-deps)"
command -v jq >/dev/null || fail "jq not found (run scripts/install-deps)"

T="$(mktemp -d "${TMPDIR:-/tmp}/usher-it-$NAME.XXXXXX")"
cleanup() {
  local rc=$?
  "$SINKS" stop "$T/sinks" || true
  if [ "$OK" = 1 ] && [ "$rc" = 0 ]; then
    rm -rf "$T"
  else
    for f in "$T"/sinks/*.stderr; do
      [ -f "$f" ] && { echo "----- $f -----" >&2; tail -n 30 "$f" >&2; }
    done
    echo "----- test files kept in $T -----" >&2
    [ "$rc" != 0 ] || rc=1
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_sinks() {
  "$SINKS" start "$T/sinks" || fail "harness/sinks start failed"
  # shellcheck disable=SC1091
  . "$T/sinks/env.sh"
}

# ---------------------------------------------------------------------------------------------
# HTTP sink
# ---------------------------------------------------------------------------------------------
start_sinks
for v in HTTP_SINK_PORT HTTP_SINK_URL HTTP_SINK_LOG SMTP_PORT SMTP_URL SMTP_MAILDIR SMTP_CONTROL_URL; do
  [ -n "${!v:-}" ] || fail "env.sh lacks $v"
done
[ "$HTTP_SINK_URL" = "http://127.0.0.1:$HTTP_SINK_PORT" ] || fail "HTTP_SINK_URL=$HTTP_SINK_URL"
[ "$SMTP_URL" = "smtp://127.0.0.1:$SMTP_PORT" ] || fail "SMTP_URL=$SMTP_URL"
H="$HTTP_SINK_URL"
C=(curl -sS --max-time 10)

# hcode ARGS...: HTTP status of one request (curl's exit status must be 0).
hcode() { "${C[@]}" -o /dev/null -w '%{http_code}' "$@"; }
# mode JSON: install a fault mode on the HTTP sink.
mode() { "${C[@]}" -o /dev/null -X POST --data-binary "$1" "$H/_control/mode" || fail "mode $1"; }
# nlog JQFILTER: number of log lines matching the jq select() filter.
nlog() { jq -c "select($1)" "$HTTP_SINK_LOG" | wc -l; }

log "http: POST is logged with body, headers, status"
body='{"text":"héllo \"world\"","n":1}'
[ "$(hcode -H 'Content-Type: application/json' -H 'X-Trace: abc' --data-binary "$body" "$H/hook/a?x=1")" = 200 ] ||
  fail "POST /hook/a not answered 200"
line="$(jq -c 'select(.path=="/hook/a")' "$HTTP_SINK_LOG")"
[ "$(jq -r .body <<<"$line")" = "$body" ] || fail "logged body differs: $line"
[ "$(jq -r '.method,.status,.query,.headers["x-trace"],.headers["content-type"]' <<<"$line" | tr '\n' ' ')" = \
  "POST 200 x=1 abc application/json " ] || fail "logged fields wrong: $line"
jq -e '(.seq|type=="number") and (.ts|type=="number")' <<<"$line" >/dev/null || fail "seq/ts missing: $line"

log "http: keep-alive (two requests, one connection), default answers"
out="$("${C[@]}" -v "$H/k1" "$H/k2" 2>&1)"
grep -q 'Re-using existing connection' <<<"$out" || fail "second request did not reuse the connection"
[ "$("${C[@]}" -d '{"text":"x"}' "$H/services/T1/B2/xyz")" = ok ] || fail "Slack path did not answer ok"
[ "$("${C[@]}" -d '{"text":"x"}' "$H/slack")" = ok ] || fail "/slack did not answer ok"
[ "$("${C[@]}" -d x "$H/plain")" = '{"ok":true}' ] || fail "default answer is not {\"ok\":true}"
up='{"inputs":[{"idProperty":"email","id":"a@example.org","properties":{"firstname":"A"}}]}'
r1="$("${C[@]}" -H 'Content-Type: application/json' -d "$up" "$H/crm/v3/objects/contacts/batch/upsert")"
r2="$("${C[@]}" -H 'Content-Type: application/json' -d "$up" "$H/crm/v3/objects/contacts/batch/upsert")"
jq -e '.status=="COMPLETE" and (.results|length)==1 and .results[0].new==true
       and .results[0].properties.email=="a@example.org"' <<<"$r1" >/dev/null || fail "upsert answer: $r1"
jq -e --argjson a "$r1" '.results[0].id==$a.results[0].id and .results[0].new==false' \
  <<<"$r2" >/dev/null || fail "upsert ids not stable: $r1 / $r2"
[ "$(hcode -d 'not json' "$H/crm/v3/objects/contacts/batch/upsert")" = 400 ] || fail "bad upsert body not 400"

log "http: status 500 with count 2 -> 500, 500, 200 (all three logged)"
mode '{"status":500,"count":2,"paths":["/crm"]}'
[ "$(hcode -d x "$H/other")" = 200 ] || fail "path outside paths got a fault"
codes="$(for _ in 1 2 3; do hcode -d x "$H/crm/x"; echo -n ' '; done)"
[ "$codes" = "500 500 200 " ] || fail "expected '500 500 200', got '$codes'"
[ "$(nlog '.path=="/crm/x" and .status==500')" = 2 ] || fail "500s not logged twice"
[ "$(nlog '.path=="/crm/x" and .status==200')" = 1 ] || fail "final 200 not logged"

log "http: 429 with Retry-After"
mode '{"status":429,"retry_after":2,"count":1}'
hdrs="$("${C[@]}" -D - -o /dev/null -d x "$H/slack/T/B/C")"
grep -q '^HTTP/1.1 429' <<<"$hdrs" || fail "no 429: $hdrs"
grep -qi '^Retry-After: 2' <<<"$hdrs" || fail "no Retry-After: 2 header: $hdrs"
[ "$(hcode -d x "$H/slack/T/B/C")" = 200 ] || fail "count 1 did not end after one 429"

log "http: drop closes the connection without an answer (curl exit 52)"
mode '{"drop":true,"count":1}'
rc=0; "${C[@]}" -o /dev/null -d x "$H/dropme" 2>/dev/null || rc=$?
[ "$rc" = 52 ] || fail "drop: curl exit $rc, expected 52 (empty reply)"
[ "$(nlog '.path=="/dropme" and .status==0 and .dropped==true')" = 1 ] || fail "drop not logged"
[ "$(hcode -d x "$H/dropme")" = 200 ] || fail "drop count 1 did not end"

log "http: fail_ratio is deterministic per seed; delay_ms delays"
ratio_run() {
  mode '{"status":503,"fail_ratio":0.5,"seed":7}'
  for _ in $(seq 1 20); do hcode -d x "$H/ratio"; echo -n ' '; done
}
s1="$(ratio_run)"; s2="$(ratio_run)"
[ "$s1" = "$s2" ] || fail "fail_ratio not deterministic: '$s1' vs '$s2'"
n503="$(grep -o 503 <<<"$s1" | wc -l)"
{ [ "$n503" -ge 3 ] && [ "$n503" -le 17 ]; } || fail "fail_ratio 0.5 gave $n503/20 failures: $s1"
mode '{"delay_ms":600,"count":1}'
t="$("${C[@]}" -o /dev/null -w '%{time_total}' -d x "$H/slow")"
awk -v t="$t" 'BEGIN{exit !(t >= 0.6)}' || fail "delay_ms 600 answered in ${t}s"

log "http: reset, stats, control requests are not logged"
"${C[@]}" -o /dev/null -X POST "$H/_control/reset" || fail "reset"
[ "$(hcode -d x "$H/ratio")" = 200 ] || fail "reset did not clear the mode"
stats="$("${C[@]}" "$H/_control/stats")"
jq -e '.by_path["/ratio"]["200"]==1 and .total==1 and .mode==null' <<<"$stats" >/dev/null ||
  fail "stats after reset: $stats"
[ "$(nlog '.path|startswith("/_control")')" = 0 ] || fail "control requests were logged"
[ "$(hcode -X POST -d '{"stauts":500}' "$H/_control/mode")" = 400 ] || fail "typo in mode not rejected"

log "http: 40 concurrent clients and a 16 MiB body"
before="$(wc -l <"$HTTP_SINK_LOG")"
codes="$(seq 1 40 | xargs -P 40 -I{} curl -sS --max-time 20 -o /dev/null -w '%{http_code}\n' -d 'n={}' "$H/par")"
[ "$(grep -c '^200$' <<<"$codes")" = 40 ] || fail "concurrent: $(sort <<<"$codes" | uniq -c | tr '\n' ' ')"
[ "$(nlog '.path=="/par"')" = 40 ] || fail "concurrent: not 40 log lines"
[ "$(jq -s 'map(.seq)|unique|length' "$HTTP_SINK_LOG")" = "$((before + 40))" ] || fail "seq not unique"
head -c 12582912 /dev/urandom | base64 -w0 >"$T/big"
[ "$(hcode -H 'Content-Type: text/plain' --data-binary @"$T/big" "$H/big")" = 200 ] || fail "big body not 200"
[ "$(jq -r 'select(.path=="/big")|.body' "$HTTP_SINK_LOG" | head -c -1 | cmp - "$T/big" && echo same)" = same ] ||
  fail "big body logged differently"

# ---------------------------------------------------------------------------------------------
# SMTP sink
# ---------------------------------------------------------------------------------------------
S="$SMTP_CONTROL_URL"
smode() { "${C[@]}" -o /dev/null -X POST --data-binary "$1" "$S/_control/mode" || fail "smtp mode $1"; }
# msg FILE SUBJECT: write a small CRLF message (with a line that needs dot-stuffing).
msg() {
  printf 'From: a@example.org\r\nTo: b@example.org\r\nSubject: %s\r\nMessage-ID: <%s@example.org>\r\n\r\nHello\r\n.leading dot\r\n' \
    "$2" "$2" >"$1"
}
# send RCPT SUBJECT [CURL-ARGS...]: send one message; curl's exit status.
send() {
  local rcpt="$1" subj="$2"; shift 2
  msg "$T/$subj.eml" "$subj"
  "${C[@]}" --url "$SMTP_URL" --mail-from a@example.org --mail-rcpt "$rcpt" \
    --upload-file "$T/$subj.eml" "$@" 2>/dev/null
}
# nmail JQFILTER: number of index.jsonl entries matching.
nmail() { jq -c "select($1)" "$SMTP_MAILDIR/index.jsonl" | wc -l; }

log "smtp: a message is stored byte-exact with the right envelope"
send b@example.org m1 || fail "plain send failed"
e="$(jq -c 'select(.subject=="m1")' "$SMTP_MAILDIR/index.jsonl")"
jq -e '.mail_from=="a@example.org" and .rcpt_tos==["b@example.org"] and .message_id=="<m1@example.org>"' \
  <<<"$e" >/dev/null || fail "index entry wrong: $e"
cmp "$SMTP_MAILDIR/$(jq -r .seq <<<"$e").eml" "$T/m1.eml" || fail "stored .eml differs from what was sent"
[ "$(jq -r .size <<<"$e")" = "$(stat -c %s "$T/m1.eml")" ] || fail "size field wrong: $e"

log "smtp: 451 for the next 2 messages, then accepted"
smode '{"tempfail_count":2}'
send b@example.org t1 && fail "1st message not tempfailed"
send b@example.org t2 && fail "2nd message not tempfailed"
send b@example.org t3 || fail "3rd message not accepted after tempfail_count 2"
[ "$(nmail '.subject=="t1" or .subject=="t2"')" = 0 ] || fail "a tempfailed message was stored"

log "smtp: 451 during a 2 s window, then accepted"
smode '{"tempfail_seconds":2}'
t0=$SECONDS
send b@example.org w0 && fail "message in the window not tempfailed"
ok=""
deadline=$((SECONDS + 10))
while [ "$SECONDS" -lt "$deadline" ]; do
  if send b@example.org w1; then ok=1; break; fi
  sleep 0.25
done
[ -n "$ok" ] || fail "still failing 10 s after a 2 s window"
[ $((SECONDS - t0)) -ge 1 ] || fail "window ended too early"
[ "$(nmail '.subject=="w1"')" = 1 ] || fail "message after the window not stored"
st="$("${C[@]}" "$S/_control/stats")"
jq -e '.stats.tempfailed >= 3' <<<"$st" >/dev/null || fail "stats: $st"

log "smtp: 550 for a recipient pattern"
smode '{"reject_rcpt":"^bounce\\+.*@example\\.org$"}'
send 'bounce+1@example.org' r1 && fail "recipient matching reject_rcpt was accepted"
send b@example.org r2 || fail "other recipient rejected"
[ "$(nmail '.subject=="r1"')" = 0 ] || fail "rejected message stored"

log "smtp: delay_ms on DATA"
smode '{"delay_ms":700,"delay_on":"data"}'
t="$("${C[@]}" --url "$SMTP_URL" --mail-from a@example.org --mail-rcpt b@example.org \
      --upload-file "$T/m1.eml" -w '%{time_total}')" || fail "delayed send failed"
awk -v t="$t" 'BEGIN{exit !(t >= 0.7)}' || fail "delay 700 ms: took ${t}s"

log "smtp: the replies to pipelined MAIL, RCPT and BDAT LAST come together, after the delay"
# (as Postfix answers a group; one command at a time is answered at once)
python3 - "$SMTP_PORT" <<'PY' || fail "pipelined replies not grouped"
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
f = s.makefile("rb")
def reply():
    lines = [f.readline()]
    while lines[-1][3:4] == b"-":
        lines.append(f.readline())
    return lines
reply()                                   # greeting
s.sendall(b"EHLO selftest\r\n")
assert any(b"CHUNKING" in l for l in reply()), "no CHUNKING"
s.sendall(b"NOOP\r\n")
assert reply()[0].startswith(b"250"), "NOOP not answered at once"
body = b"Subject: grouped\r\n\r\nHi\r\n"
t0 = time.monotonic()
s.sendall(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nBDAT %d LAST\r\n%s"
          % (len(body), body))
first = s.recv(4096)
took = time.monotonic() - t0
assert first.count(b"\r\n") == 3 and first.startswith(b"250") and b"queued" in first, first
assert took >= 0.69, f"replies after {took:.3f} s, before the 700 ms delay"
PY

log "smtp: AUTH required at runtime (mode auth_user/auth_password)"
smode '{"auth_user":"usher","auth_password":"s3cret"}'
send b@example.org a0 && fail "send without AUTH accepted while AUTH is required"
send b@example.org a1 --user usher:wrong && fail "wrong password accepted"
send b@example.org a2 --user usher:s3cret || fail "correct AUTH rejected"
jq -e 'select(.subject=="a2")|.auth_login=="usher"' "$SMTP_MAILDIR/index.jsonl" >/dev/null ||
  fail "auth_login not recorded"
send b@example.org a3 --user usher:s3cret --login-options AUTH=LOGIN || fail "AUTH LOGIN rejected"
"${C[@]}" -o /dev/null -X POST "$S/_control/reset" || fail "smtp reset"
send b@example.org a4 || fail "reset did not turn AUTH off"

log "smtp: AUTH from start-up (SINKS_SMTP_AUTH), env.sh updated"
"$SINKS" stop "$T/sinks"
SINKS_SMTP_AUTH='boot:pw d' start_sinks
[ "${SMTP_AUTH_USER:-}:${SMTP_AUTH_PASSWORD:-}" = 'boot:pw d' ] || fail "env.sh lacks SMTP_AUTH_*"
send b@example.org b0 && fail "start-up AUTH not enforced"
send b@example.org b1 --user 'boot:pw d' || fail "start-up AUTH rejected correct credentials"
[ "$(nmail 'true')" = 1 ] || fail "restart did not start with an empty maildir"
"$SINKS" stop "$T/sinks"
"$SINKS" stop "$T/sinks"   # idempotent
if [ -f "$T/sinks/smtp_sink.pid" ] || [ -f "$T/sinks/http_sink.pid" ]; then fail "pid files left"; fi

OK=1
log "PASS"
