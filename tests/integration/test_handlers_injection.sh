#!/usr/bin/env bash
# User-controlled text cannot inject: a signup named "Mallory\r\nBcc: attacker@example.org"
# gets one welcome e-mail, to the user only, with no Bcc (or any other added) header; a signup
# named "<!channel>" reaches Slack as "&lt;!channel&gt;" (the template's own < > stay as the
# operator wrote them) and the HTML e-mail as an entity. Both are bare Auth0 users with an
# `usher-event-type: signup` header, produced with `usher-testkit produce-file`.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
it_init handlers_injection

start_sinks

create_topics 1
jq -n '{user_id: "auth0|inj-bcc", email: "mallory@example.com",
        name: "Mallory\r\nBcc: attacker@example.org", created_at: "2026-01-02T03:04:05.000Z"}' >"$T/bcc.json"
jq -n '{user_id: "auth0|inj-channel", email: "channel@example.com", name: "<!channel>",
        created_at: "2026-01-02T03:04:06.000Z"}' >"$T/channel.json"
tk produce-file -b "$KAFKA_BOOTSTRAP" -t "$TOPIC" -f "$T/bcc.json" -k inj-bcc -H usher-event-type=signup
tk produce-file -b "$KAFKA_BOOTSTRAP" -t "$TOPIC" -f "$T/channel.json" -k inj-channel -H usher-event-type=signup

handlers_config "$T/usher.conf" welcome_email slack_notify
usher_start "$T/usher.conf" "$T/usher.log"
wait_at_end 60 "$USHER_PID"

/usr/bin/python3 - "$SMTP_MAILDIR" "$HTTP_SINK_LOG" <<'PY' || fail "injection checks failed (see above)"
import email, email.policy, json, os, sys
maildir, http_log = sys.argv[1], sys.argv[2]
errors = []
index = [json.loads(l) for l in open(os.path.join(maildir, "index.jsonl"))]
by_rcpt = {}
for e in index:
    for r in e["rcpt_tos"]:
        by_rcpt.setdefault(r, []).append(e)
if sorted(by_rcpt) != ["channel@example.com", "mallory@example.com"] or len(index) != 2:
    errors.append(f"expected one message each to mallory@ and channel@, got {[(e['seq'], e['rcpt_tos']) for e in index]}")
for e in index:
    raw = open(os.path.join(maildir, e["file"]), "rb").read()
    head = raw.split(b"\r\n\r\n", 1)[0]
    names = [l.split(b":", 1)[0].strip().lower() for l in head.split(b"\r\n") if l and l[:1] not in b" \t"]
    if b"bcc" in names or b"cc" in names:
        errors.append(f"message {e['seq']} has a Bcc/Cc header: {head!r}")
    unexpected = set(names) - {b"date", b"from", b"to", b"subject", b"message-id", b"content-type", b"mime-version"}
    if unexpected:
        errors.append(f"message {e['seq']} has unexpected headers {unexpected}")
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    if e["rcpt_tos"] == ["mallory@example.com"]:
        if str(msg["To"]) != '"MalloryBcc: attacker@example.org" <mallory@example.com>':
            errors.append(f"To header {str(msg['To'])!r}")
        if str(msg["Subject"]) != "Welcome, MalloryBcc: attacker@example.org!":
            errors.append(f"Subject {str(msg['Subject'])!r}")
    if e["rcpt_tos"] == ["channel@example.com"]:
        html = msg.get_body(("html",)).get_content()
        if "<p>Hi &lt;!channel&gt;,</p>" not in html or "<!channel>" in html:
            errors.append(f"HTML part not escaped: {html[:300]!r}")
if any("attacker" in r for r in by_rcpt):
    errors.append("a message went to the attacker")

posts = [json.loads(json.loads(l)["body"])["text"] for l in open(http_log)]
want = ":tada: New signup: &lt;!channel&gt; <channel@example.com> via auth0"
if posts.count(want) != 1:
    errors.append(f"Slack text {want!r} not posted exactly once; posts: {posts}")
if any("<!channel>" in p for p in posts):
    errors.append(f"an unescaped <!channel> reached Slack: {posts}")
if len(posts) != 2:
    errors.append(f"{len(posts)} Slack posts, expected 2")
for m in errors: print(m, file=sys.stderr)
sys.exit(1 if errors else 0)
PY
log "no Bcc header, only the user's own address in the envelope; <!channel> escaped in Slack and HTML"
usher_stop "$USHER_PID" 15
[ "$STOP_RC" = 0 ] || fail "usher exited $STOP_RC after SIGTERM, expected 0"
it_pass
