#!/usr/bin/env bash
# The three built-in handlers against a real SMTP server and HTTP sink (tests/harness/sinks):
# 500 signups in eight IdP formats, 500 users -> exactly 500 welcome e-mails (one per user, to
# the right address, with the user's name in To, Subject and body, or "there" when the format
# carries no name), 500 Slack posts (one per user, JSON with text + mrkdwn block) and 500 HubSpot
# upserts (keyed by e-mail, bearer token, first/last name). Then a second group with the same
# key_prefix re-reads every record (a redelivery): nothing is sent a second time; nor when the
# same event comes in two consecutive records. The sink offers PIPELINING and CHUNKING: every
# e-mail's RCPT and BDAT arrived before the replies to the commands ahead of them (pipelined),
# and every message came as a BDAT chunk. SMTP sessions the server closes while idle are opened
# anew without a retry; a refused recipient is dead-lettered (smtp_550) and its session kept.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
it_init handlers_delivery

N=500 SEED=31 IT_CRM_TOKEN="crm-token-$RANDOM$RANDOM"
start_sinks

create_topics 6
tk produce-signups -b "$KAFKA_BOOTSTRAP" -t "$TOPIC" -n $N -u $N --seed $SEED >"$T/expect.json"
[ "$(jq .total "$T/expect.json")" = $N ] || fail "testkit produced $(jq .total "$T/expect.json"), not $N"

# check_deliveries: exactly N of each, one per user, with the right content (Python's email
# parser reads the stored messages, so headers and quoted-printable bodies are decoded for real).
check_deliveries() {
  /usr/bin/python3 - "$SMTP_MAILDIR" "$HTTP_SINK_LOG" "$N" "$SEED" "$IT_CRM_TOKEN" "$IT_SLACK_PATH" "$IT_CRM_PATH" <<'PY' ||
import email, email.policy, email.utils, json, os, re, sys
maildir, http_log, n, seed, token = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
slack_path, crm_path = sys.argv[6], sys.argv[7]
errors = []
def err(m):
    if len(errors) < 20: errors.append(m)
# testkit: user u comes from format u % 8; auth0_user, logto, cloudevents and clerk carry
# "Test User" (Clerk as first + last name), the others no name at all.
def name_of(u): return "Test User" if u % 8 in (0, 3, 4, 5) else None
expected = {f"user{u}.s{seed}@example.com": name_of(u) for u in range(n)}

index = [json.loads(l) for l in open(os.path.join(maildir, "index.jsonl"))]
if len(index) != n: err(f"{len(index)} e-mails stored, expected {n}")
seen, mids = {}, set()
for e in index:
    rcpt = e["rcpt_tos"]
    if len(rcpt) != 1: err(f"message {e['seq']} has recipients {rcpt}"); continue
    addr = rcpt[0]
    seen[addr] = seen.get(addr, 0) + 1
    if addr not in expected: err(f"message {e['seq']} to unexpected {addr}"); continue
    raw = open(os.path.join(maildir, e["file"]), "rb").read()
    if re.search(rb"(?<!\r)\n", raw) or b"=0A" in raw: err(f"{addr}: bare LF line break in the message")
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    want = expected[addr]
    to_name, to_addr = email.utils.parseaddr(str(msg["To"]))
    if to_addr != addr: err(f"{addr}: To header address {to_addr!r}")
    if to_name != (want or ""): err(f"{addr}: To display name {to_name!r}, expected {want!r}")
    if str(msg["Subject"]) != f"Welcome, {want or 'there'}!": err(f"{addr}: Subject {msg['Subject']!r}")
    if email.utils.parseaddr(str(msg["From"])) != ("Example Team", "welcome@example.com"):
        err(f"{addr}: From {msg['From']!r}")
    if e["mail_from"] != "welcome@example.com": err(f"{addr}: envelope from {e['mail_from']!r}")
    text = msg.get_body(("plain",)).get_content().replace("\r\n", "\n")
    html = msg.get_body(("html",)).get_content().replace("\r\n", "\n")
    if not text.startswith(f"Hi {want or 'there'},\n"): err(f"{addr}: text body starts {text[:40]!r}")
    if addr not in text or f"<strong>{addr}</strong>" not in html: err(f"{addr}: address missing in body")
    if f"<p>Hi {want or 'there'},</p>" not in html: err(f"{addr}: html greeting wrong")
    mids.add(str(msg["Message-ID"]))
missing = [a for a in expected if a not in seen]
dups = {a: c for a, c in seen.items() if c > 1}
if missing: err(f"{len(missing)} users got no e-mail, e.g. {missing[:3]}")
if dups: err(f"{len(dups)} users got several e-mails, e.g. {list(dups.items())[:3]}")
if len(mids) != len(index): err(f"{len(mids)} distinct Message-IDs for {len(index)} messages")

reqs = [json.loads(l) for l in open(http_log)]
slack = [r for r in reqs if r["path"] == slack_path]
crm = [r for r in reqs if r["path"] == crm_path]
if len(reqs) != len(slack) + len(crm): err(f"{len(reqs) - len(slack) - len(crm)} requests to other paths")
if len(slack) != n: err(f"{len(slack)} Slack posts, expected {n}")
if len(crm) != n: err(f"{len(crm)} CRM upserts, expected {n}")
slack_users = {}
for r in slack:
    if r["status"] != 200 or r["method"] != "POST": err(f"Slack post answered {r['status']}")
    if r["headers"].get("content-type") != "application/json": err(f"Slack content-type {r['headers'].get('content-type')}")
    b = json.loads(r["body"])
    t = b["text"]
    if b["blocks"] != [{"type": "section", "text": {"type": "mrkdwn", "text": t}}]: err(f"Slack blocks {b['blocks']}")
    addr = t.split("<", 1)[1].split(">", 1)[0] if "<" in t else None
    if addr not in expected: err(f"Slack text names no expected user: {t!r}"); continue
    slack_users[addr] = slack_users.get(addr, 0) + 1
    if not t.startswith(f":tada: New signup: {expected[addr] or 'someone'} <{addr}> via "):
        err(f"Slack text {t!r}")
if set(slack_users) != set(expected) or any(c != 1 for c in slack_users.values()):
    err(f"Slack posts cover {len(slack_users)} users, expected each of {n} once")
crm_users = {}
for r in crm:
    if r["status"] != 200: err(f"CRM upsert answered {r['status']}")
    if r["headers"].get("authorization") != f"Bearer {token}": err("CRM request without the bearer token")
    inp = json.loads(r["body"])["inputs"]
    if len(inp) != 1: err(f"CRM body has {len(inp)} inputs"); continue
    i = inp[0]; p = i["properties"]; addr = i["id"]
    crm_users[addr] = crm_users.get(addr, 0) + 1
    if addr not in expected: err(f"CRM upsert of unexpected {addr}"); continue
    if i["idProperty"] != "email" or p.get("email") != addr: err(f"CRM input {i}")
    if p.get("usher_last_event") != "signup" or not p.get("usher_user_id"): err(f"CRM properties {p}")
    if "usher_status" in p: err(f"CRM signup carries usher_status: {p}")
    want = expected[addr]
    if (p.get("firstname"), p.get("lastname")) != (("Test", "User") if want else (None, None)):
        err(f"{addr}: firstname/lastname {p.get('firstname')!r}/{p.get('lastname')!r}")
if set(crm_users) != set(expected) or any(c != 1 for c in crm_users.values()):
    err(f"CRM upserts cover {len(crm_users)} contacts, expected each of {n} once")
for m in errors: print(m, file=sys.stderr)
sys.exit(1 if errors else 0)
PY
    fail "deliveries wrong (see above)"
}

handlers_config "$T/usher.conf"
usher_start "$T/usher.conf" "$T/usher.log"
wait_at_end 120 "$USHER_PID"
check_deliveries
log "$N e-mails, $N Slack posts, $N CRM upserts, one per user"
# The sink offers PIPELINING and CHUNKING: the RCPT and the BDAT of each message arrived ahead
# of the replies before them (2 per message), and each message came as BDAT's chunk. (That
# the chunk shares its command's write is not visible to the sink: TCP may split or join.)
read -r pipelined bdat < <(smtp_stats pipelined bdat)
[ "$pipelined" = $((2 * N)) ] || fail "$pipelined SMTP commands arrived pipelined, expected $((2 * N))"
[ "$bdat" = $N ] || fail "$bdat messages came by BDAT, expected $N"
stats_json "$T/usher.conf" "$T/stats.json"
for h in welcome_email slack_notify crm_sync; do
  got="$(jq -c ".handlers.$h | {ok, failed, dead_lettered, skipped}" "$T/stats.json")"
  [ "$got" = "{\"ok\":$N,\"failed\":0,\"dead_lettered\":0,\"skipped\":0}" ] ||
    fail "handlers.$h = $got, expected ok $N and no failure or skip"
done
# One call per event, each a real round trip to a sink: more than 0 µs, less than its timeout.
# (The timings are written within 250 ms, not with each record.)
for _ in $(seq 1 40); do
  stats_json "$T/usher.conf" "$T/stats.json"
  got="$(jq -c '[.handlers.welcome_email, .handlers.slack_notify, .handlers.crm_sync |
                 [.calls, (.busy_us > 0 and .busy_us < .calls * 30000000)]]' "$T/stats.json")"
  [ "$got" = "[[$N,true],[$N,true],[$N,true]]" ] && break
  sleep 0.1
done
[ "$got" = "[[$N,true],[$N,true],[$N,true]]" ] ||
  fail "calls/busy_us of welcome_email, slack_notify, crm_sync = $got, expected $N calls each with a plausible time"

usher_stop "$USHER_PID" 15
[ "$STOP_RC" = 0 ] || fail "usher exited $STOP_RC after SIGTERM, expected 0"

# Redelivery: a fresh group re-reads all N records; the idempotency markers (same key_prefix)
# must keep every side effect from happening twice.
GROUP="$GROUP-again"
handlers_config "$T/usher2.conf"
usher_start "$T/usher2.conf" "$T/usher2.log"
wait_at_end 120 "$USHER_PID"
check_deliveries
stats_json "$T/usher2.conf" "$T/stats2.json"
ok="$(jq '.handlers.welcome_email.ok' "$T/stats2.json")"
[ "$ok" = $((2 * N)) ] || fail "welcome_email ok = $ok after the re-read, expected $((2 * N)) (the second group must have seen every event)"
log "re-read by a second group: still exactly $N of each"

# Back to back: the same event in two consecutive records (an IdP retrying its webhook), new to
# this key prefix. The second must see the markers the first wrote, whichever thread wrote
# them: one e-mail, one Slack post, one CRM upsert.
dup="$FIXTURES/auth0-action/post-user-registration.full-event.json"
slack0="$(http_count "$IT_SLACK_PATH" any)" crm0="$(http_count "$IT_CRM_PATH" any)"
for _ in 1 2; do tk produce-file -b "$KAFKA_BOOTSTRAP" -t "$TOPIC" -f "$dup" -k dup-key; done
wait_at_end 60 "$USHER_PID"
got="$(mail_count) $(( $(http_count "$IT_SLACK_PATH" any) - slack0 )) $(( $(http_count "$IT_CRM_PATH" any) - crm0 ))"
[ "$got" = "$((N + 1)) 1 1" ] ||
  fail "after the same event twice: e-mails, new Slack posts, new CRM upserts = $got, expected $((N + 1)) 1 1"
log "the same event in two consecutive records: one e-mail, one Slack post, one CRM upsert"

# SMTP sessions the server closed while idle are opened anew within the same call: after a wave
# of 40 new signups (every worker keeps a session), the sink closes all idle connections; each
# e-mail of a second wave of 40 is then delivered once, none of them retried.
tk produce-signups -b "$KAFKA_BOOTSTRAP" -t "$TOPIC" -n 40 -u 40 --seed $((SEED + 1)) >/dev/null
wait_at_end 60 "$USHER_PID"
[ "$(mail_count)" = $((N + 41)) ] || fail "$(mail_count) e-mails after the first wave, expected $((N + 41))"
closed="$(curl -fsS -X POST "$SMTP_CONTROL_URL/_control/close_idle" | jq .closed)"
[ "$closed" = 4 ] || fail "the sink closed $closed idle SMTP sessions, expected usher's 4 (one per worker, each sent mail)"
tk produce-signups -b "$KAFKA_BOOTSTRAP" -t "$TOPIC" -n 40 -u 40 --seed $((SEED + 2)) >/dev/null
wait_at_end 60 "$USHER_PID"
[ "$(mail_count)" = $((N + 81)) ] || fail "$(mail_count) e-mails after the second wave, expected $((N + 81))"
stats_json "$T/usher2.conf" "$T/stats3.json"
got="$(jq -c '.handlers.welcome_email | {retried, failed}' "$T/stats3.json")"
[ "$got" = '{"retried":0,"failed":0}' ] || fail "welcome_email $got after the sink closed $closed idle sessions, expected no retry"
log "$closed SMTP sessions closed by the server while idle: the next 40 e-mails went out once each, none retried"

# A refused recipient (550) fails for good: the record is dead-lettered with reason smtp_550,
# and RSET keeps the session, so no new connection is opened for it, nor for the 40 e-mails
# after it (every worker sends some).
conns0="$(smtp_stats connections)"
curl -fsS -X POST -d "{\"reject_rcpt\":\"^user[0-9]+\\\\.s$((SEED + 3))@\"}" \
  "$SMTP_CONTROL_URL/_control/mode" >/dev/null || fail "the SMTP sink refused the reject_rcpt mode"
tk produce-signups -b "$KAFKA_BOOTSTRAP" -t "$TOPIC" -n 2 -u 2 --seed $((SEED + 3)) >/dev/null
wait_at_end 60 "$USHER_PID"
curl -fsS -X POST -d '{}' "$SMTP_CONTROL_URL/_control/mode" >/dev/null || fail "SMTP sink mode reset failed"
tk produce-signups -b "$KAFKA_BOOTSTRAP" -t "$TOPIC" -n 40 -u 40 --seed $((SEED + 4)) >/dev/null
wait_at_end 60 "$USHER_PID"
stats_json "$T/usher2.conf" "$T/stats4.json"
got="$(mail_count) $(jq -c '[.dead_letter_reasons.smtp_550, .handlers.welcome_email.dead_lettered]' "$T/stats4.json") $(smtp_stats rcpt_rejected connections)"
[ "$got" = "$((N + 121)) [2,2] 2 $conns0" ] ||
  fail "after 2 refused and 40 accepted recipients: e-mails, [smtp_550 reasons, dead-lettered], refusals, connections = $got, expected $((N + 121)) [2,2] 2 $conns0"
log "2 recipients refused with 550: dead-lettered as smtp_550; the sessions stayed open for the next e-mails"
usher_stop "$USHER_PID" 15
[ "$STOP_RC" = 0 ] || fail "usher exited $STOP_RC after SIGTERM, expected 0"
it_pass
