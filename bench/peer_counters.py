#!/usr/bin/env python3
"""The benchmark's peer: the signup counters done with confluent-kafka (librdkafka's Python
client) and redis-py, the way their documentation recommends, for bench/run.

    peer_counters.py -b BROKERS -g GROUP -t TOPIC -r REDIS_URL -p KEY_PREFIX [--batch N]

What it does, exactly:
  * one Consumer in group GROUP subscribed to TOPIC (enable.auto.commit=False,
    auto.offset.reset=earliest); a loop of consume(num_messages=N, timeout=0.5) batches;
  * every record value is parsed with json.loads; type, UTC day and user id are taken the
    simplest way for the formats the testkit's produce-signups writes (a JSON array is an
    Auth0 Log Stream batch: one event per element; a bare Auth0 user takes its type from the
    usher-event-type header);
  * per batch, the counts are added up per (type, day) and one pipelined (non-transactional)
    round trip writes, like usher's signup_counters script does after its fence:
      HINCRBY PREFIX:events:<type> <day> n   and   HINCRBY PREFIX:events:<type> total n
      PFADD   PREFIX:uu:<type>:<day> user...
  * after the pipeline succeeded, commit(asynchronous=True) of the batch's positions
    (at-least-once: commit after processing); on SIGTERM/SIGINT a last synchronous commit
    and close().
It has no exactly-once fence (no per-partition ZADD NX, no Lua script): a redelivered record
is counted again. So it does strictly less work than usher's signup_counters.
"""
import argparse
import json
import signal
import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException
import redis

# Source event type -> canonical type, for the formats produce-signups writes (all signups).
TYPE_MAP = {
    "signup": "signup",          # bare Auth0 user: the usher-event-type header
    "ss": "signup",              # Auth0 Log Stream, log code ss (successful signup)
    "PostRegister": "signup",    # Logto interaction hook
    "user.created": "signup",    # CloudEvents from Auth0 Event Streams, Clerk (Svix)
    "REGISTER": "signup",        # Keycloak user event
}


def day_iso(s):
    return s[:10]


def day_ms(ms):
    return time.strftime("%Y-%m-%d", time.gmtime(ms // 1000))


def header(msg, name):
    for k, v in msg.headers() or ():
        if k == name:
            return v.decode() if v is not None else None
    return None


def events(msg):
    """Yields (type, day, user_id) for each event in one record."""
    v = json.loads(msg.value())
    if isinstance(v, list):                      # Auth0 Log Stream batch
        for e in v:
            d = e["data"]
            yield TYPE_MAP.get(d["type"], "unknown"), day_iso(d["date"]), d["user_id"]
    elif "log_id" in v:                          # Auth0 Log Stream, single
        d = v["data"]
        yield TYPE_MAP.get(d["type"], "unknown"), day_iso(d["date"]), d["user_id"]
    elif "specversion" in v:                     # CloudEvents (Auth0 Event Streams)
        yield TYPE_MAP.get(v["type"], "unknown"), day_iso(v["time"]), v["data"]["object"]["user_id"]
    elif "hookId" in v:                          # Logto
        yield TYPE_MAP.get(v["event"], "unknown"), day_iso(v["createdAt"]), v["userId"]
    elif "realmId" in v:                         # Keycloak
        yield TYPE_MAP.get(v["type"], "unknown"), day_ms(v["time"]), v["userId"]
    elif "email_data" in v:                      # Supabase send-email hook
        t = "signup" if v["email_data"]["email_action_type"] == "signup" else "unknown"
        yield t, day_iso(v["user"]["created_at"]), v["user"]["id"]
    elif v.get("object") == "event":             # Clerk (Svix)
        yield TYPE_MAP.get(v["type"], "unknown"), day_ms(v["timestamp"]), v["data"]["id"]
    else:                                        # bare Auth0 event.user
        t = header(msg, "usher-event-type") or "signup"
        yield TYPE_MAP.get(t, "unknown"), day_iso(v["created_at"]), v["user_id"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-b", required=True)
    ap.add_argument("-g", required=True)
    ap.add_argument("-t", required=True)
    ap.add_argument("-r", required=True)
    ap.add_argument("-p", required=True)
    ap.add_argument("--batch", type=int, default=500)
    a = ap.parse_args()

    running = True

    def stop(signum, frame):
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    r = redis.Redis.from_url(a.r)
    c = Consumer({
        "bootstrap.servers": a.b,
        "group.id": a.g,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    c.subscribe([a.t])
    records = evs = 0
    try:
        while running:
            msgs = c.consume(num_messages=a.batch, timeout=0.5)
            if not msgs:
                continue
            counts, users = {}, {}
            for m in msgs:
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(m.error())
                records += 1
                for t, d, u in events(m):
                    counts[(t, d)] = counts.get((t, d), 0) + 1
                    users.setdefault((t, d), []).append(u)
                    evs += 1
            pipe = r.pipeline(transaction=False)
            totals = {}
            for (t, d), n in counts.items():
                pipe.hincrby(f"{a.p}:events:{t}", d, n)
                totals[t] = totals.get(t, 0) + n
            for t, n in totals.items():
                pipe.hincrby(f"{a.p}:events:{t}", "total", n)
            for (t, d), us in users.items():
                pipe.pfadd(f"{a.p}:uu:{t}:{d}", *us)
            pipe.execute()
            c.commit(asynchronous=True)
        try:
            c.commit(asynchronous=False)
        except KafkaException as e:          # nothing consumed since the last commit
            if e.args[0].code() != KafkaError._NO_OFFSET:
                raise
    finally:
        c.close()
    print(f"peer_counters: {records} records, {evs} events", file=sys.stderr)


if __name__ == "__main__":
    main()
