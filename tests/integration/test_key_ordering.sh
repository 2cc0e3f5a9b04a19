#!/usr/bin/env bash
# [usher] ordering = key with workers = 64 and max_inflight = 64, slack_notify posting every
# event (all types) to an HTTP sink that answers each request only after 20 ms:
#  - per-user order: for every one of 200 users, the sink receives that user's posts in exactly
#    the order the user's events were produced (testkit produce-mixed: 2,000 events of six
#    types, the per-user sequence is known), each event exactly once, none missing;
#  - parallelism across keys: throughput measured at the sink (first to last post) is at least
#    10 x (1 / 20 ms) = 500 events/s, i.e. ten times what one-at-a-time processing could do;
#  - the counters are exact and the group commits the log end.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$(dirname "${BASH_SOURCE[0]}")/lib_scale.sh"
it_init key_ordering

N=2000 USERS=200 DELAY_MS=${KEY_ORDERING_DELAY_MS:-20} SEED=61
MIN_RATE=$((10 * 1000 / DELAY_MS))
start_sinks
create_topics 6
tk produce-mixed -b "$KAFKA_BOOTSTRAP" -t "$TOPIC" -n $N -u $USERS --seed $SEED >"$T/expect.json"
[ "$(jq .total "$T/expect.json")" = $N ] || fail "testkit produced $(jq .total "$T/expect.json") events, not $N"
[ "$(jq '.user_events | length' "$T/expect.json")" = $USERS ] || fail "testkit did not produce events for $USERS users"
sink_mode "{\"delay_ms\": $DELAY_MS}"

write_config "$T/usher.conf"
scale_conf_set "$T/usher.conf" workers 64
scale_conf_set "$T/usher.conf" max_inflight 64
scale_conf_set "$T/usher.conf" ordering key
cat >>"$T/usher.conf" <<EOF

[handler.slack_notify]
events = *
webhook_url = $HTTP_SINK_URL/services/T0/B0/order
text = {{user.id}} {{id}} {{kafka.partition}} {{kafka.offset}}
EOF
scale_conf_check "$T/usher.conf"

usher_start "$T/usher.conf" "$T/usher.log"
wait_at_end 120 "$USHER_PID"
require_alive "$USHER_PID"

/usr/bin/python3 - "$HTTP_SINK_LOG" "$T/expect.json" "$N" "$DELAY_MS" "$MIN_RATE" <<'PY' || fail "ordering or throughput wrong (see above)"
import json, sys
log_path, expect_path, n, delay_ms, min_rate = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
exp = json.load(open(expect_path))
errors = []
def err(m):
    if len(errors) < 20: errors.append(m)
want = {uid: [e[0] for e in u["events"]] for uid, u in exp["user_events"].items()}
event_user = {e: uid for uid, ids in want.items() for e in ids}
reqs = sorted((json.loads(l) for l in open(log_path)), key=lambda r: r["seq"])
got, offsets, ts = {}, {}, []
for r in reqs:
    if r["path"] != "/services/T0/B0/order": err(f"request to unexpected path {r['path']}"); continue
    if r["status"] != 200: err(f"post answered {r['status']}"); continue
    text = json.loads(r["body"])["text"]
    parts = text.split(" ")
    if len(parts) != 4: err(f"unexpected text {text!r}"); continue
    uid, eid, part, off = parts[0], parts[1], int(parts[2]), int(parts[3])
    if event_user.get(eid) != uid: err(f"post {text!r}: event {eid} does not belong to {uid}"); continue
    got.setdefault(uid, []).append(eid)
    offsets.setdefault(uid, []).append((part, off))
    ts.append(r["ts"])
posts = sum(len(v) for v in got.values())
if posts != n: err(f"{posts} posts for {n} events")
bad_order = 0
for uid, ids in want.items():
    g = got.get(uid, [])
    if g != ids:
        bad_order += 1
        if sorted(g) != sorted(ids):
            err(f"user {uid}: posts {len(g)} events ({len(set(g))} distinct), produced {len(ids)}")
        else:
            first = next(i for i, (a, b) in enumerate(zip(g, ids)) if a != b)
            err(f"user {uid}: out of order at position {first}: got {g[first:first+3]}, produced {ids[first:first+3]}")
    o = offsets.get(uid, [])
    if len({p for p, _ in o}) > 1: err(f"user {uid}: events on several partitions {sorted({p for p, _ in o})}")
    if any(b[1] <= a[1] for a, b in zip(o, o[1:])): err(f"user {uid}: Kafka offsets not increasing in arrival order: {o[:5]}...")
if ts:
    span = max(ts) - min(ts) + delay_ms / 1000.0
    rate = posts / span
    print(f"key_ordering: {posts} posts in {span:.2f} s at the sink = {rate:.0f} events/s "
          f"(one at a time with {delay_ms} ms per request: {1000 / delay_ms:.0f}/s; required >= {min_rate:.0f}/s); "
          f"{len(want) - bad_order} of {len(want)} users in produced order", file=sys.stderr)
    if rate < min_rate: err(f"throughput {rate:.0f} events/s is below {min_rate:.0f} events/s")
for m in errors: print(m, file=sys.stderr)
sys.exit(1 if errors else 0)
PY

stats_json "$T/usher.conf" "$T/stats.json"
check_mixed_counts "$T/stats.json" "$T/expect.json"
usher_stop "$USHER_PID" 15
[ "$STOP_RC" = 0 ] || fail "usher exited $STOP_RC after SIGTERM, expected 0"
it_pass
