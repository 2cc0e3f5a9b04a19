#!/usr/bin/env bash
# A handler whose work on one batch of records takes longer in total than max.poll.interval.ms
# must not get usher evicted from its group. 100 signups, slack_notify against an HTTP sink
# that answers every request after 300 ms, workers = 2, max.poll.interval.ms = 10000,
# session.timeout.ms = 6000: about 15 s of handler time (checked: the sink saw posts over more
# than max.poll.interval.ms), during which usher must keep polling. Asserts: one "assigned"
# line, no "revoking" or "lost", no librdkafka max.poll.interval warning, usher never exits,
# every event posted exactly once (100 posts answered 200, one per event id and per user),
# exact counters, committed at the log end.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$(dirname "${BASH_SOURCE[0]}")/lib_scale.sh"
it_init slow_handler_no_eviction

N=100 SEED=71 DELAY_MS=300 POLL_MS=10000
start_sinks
create_topics 6
tk produce-signups -b "$KAFKA_BOOTSTRAP" -t "$TOPIC" -n $N -u $N --seed $SEED >"$T/expect.json"
[ "$(jq .total "$T/expect.json")" = $N ] || fail "testkit produced $(jq .total "$T/expect.json"), not $N"
sink_mode "{\"delay_ms\": $DELAY_MS}"

write_config "$T/usher.conf"
scale_conf_set "$T/usher.conf" workers 2
scale_conf_set "$T/usher.conf" max.poll.interval.ms $POLL_MS
scale_conf_set "$T/usher.conf" session.timeout.ms 6000
cat >>"$T/usher.conf" <<EOF

[handler.slack_notify]
webhook_url = $HTTP_SINK_URL/services/T0/B0/slow
text = {{id}} <{{user.email}}>
EOF
scale_conf_check "$T/usher.conf"

t0=$(date +%s%N)
usher_start "$T/usher.conf" "$T/usher.log"
wait_at_end 180 "$USHER_PID"
require_alive "$USHER_PID"
log "all $N events committed $(elapsed_since "$t0") s after start"

# The whole stream must have kept the handlers busy for longer than max.poll.interval.ms,
# or this test proves nothing.
/usr/bin/python3 - "$HTTP_SINK_LOG" "$N" "$SEED" "$POLL_MS" <<'PY' || fail "deliveries wrong (see above)"
import json, sys
log_path, n, seed, poll_ms = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
reqs = [json.loads(l) for l in open(log_path)]
errors = []
ids, users = {}, {}
for r in reqs:
    if r["path"] != "/services/T0/B0/slow" or r["status"] != 200:
        errors.append(f"unexpected request {r['path']} answered {r['status']}"); continue
    t = json.loads(r["body"])["text"]
    eid, addr = t.split(" ", 1)[0], t.split("<", 1)[1].split(">", 1)[0]
    ids[eid] = ids.get(eid, 0) + 1
    users[addr] = users.get(addr, 0) + 1
want = {f"user{u}.s{seed}@example.com" for u in range(n)}
if len(reqs) != n: errors.append(f"{len(reqs)} posts, expected {n}")
if set(users) != want: errors.append(f"posts name {len(set(users) & want)} of the {n} users and {len(set(users) - want)} others")
dups = {k: v for k, v in list(ids.items()) + list(users.items()) if v > 1}
if dups: errors.append(f"posted more than once: {list(dups.items())[:5]}")
span = max(r["ts"] for r in reqs) - min(r["ts"] for r in reqs) if reqs else 0
print(f"slow_handler_no_eviction: {len(reqs)} posts over {span:.1f} s at the sink "
      f"(max.poll.interval.ms = {poll_ms})", file=sys.stderr)
if span * 1000 <= poll_ms:
    errors.append(f"the posts took only {span:.1f} s, not more than max.poll.interval.ms: the test proves nothing")
for m in errors[:20]: print(m, file=sys.stderr)
sys.exit(1 if errors else 0)
PY

assigned="$(grep -c 'assigned [0-9]* partition' "$T/usher.log" || true)"
[ "$assigned" = 1 ] || fail "usher logged $assigned assignments, expected exactly 1: $(grep -E 'assigned|revoking|lost' "$T/usher.log" | tr '\n' '|')"
if grep -E 'revoking|lost [0-9]+ partition|rebalance error' "$T/usher.log" >&2; then
  fail "usher lost or gave up partitions (lines above)"
fi
if grep -iE 'max\.poll\.interval|maximum poll interval|MAXPOLL' "$T/usher.log" >&2; then
  fail "librdkafka reports a max.poll.interval.ms violation (lines above)"
fi
log "one assignment, no revoke, no loss, no max.poll.interval warning"

stats_json "$T/usher.conf" "$T/stats.json"
check_counts "$T/stats.json" "$T/expect.json"
# Handler metrics are flushed to Redis within about 250 ms of the work.
deadline=$((SECONDS + 10))
while ok="$(jq '.handlers.slack_notify.ok // 0' "$T/stats.json")"; [ "$ok" != $N ]; do
  [ "$SECONDS" -lt "$deadline" ] || fail "handlers.slack_notify.ok = $ok, expected $N (one successful post per event)"
  sleep 0.25
  stats_json "$T/usher.conf" "$T/stats.json"
done
usher_stop "$USHER_PID" 15
[ "$STOP_RC" = 0 ] || fail "usher exited $STOP_RC after SIGTERM, expected 0"
it_pass
