#!/usr/bin/env python3
"""check_counts.py REDIS_URL PREFIX EXPECT.json

Checks the signup counters under PREFIX in Redis (the schema usher's signup_counters writes,
and bench/peer_counters.py mirrors) against produce-signups' expectation EXPECT.json:
PREFIX:events:signup `total` and every day exact, no extra day, PFCOUNT of
PREFIX:uu:signup:<day> within 2% of the distinct users that day (HyperLogLog), and
PREFIX:dead_lettered absent or 0. Prints one summary line; exits 1 listing what is wrong.
Runs with the bench venv's python (redis-py).
"""
import json
import sys

import redis

url, prefix, expect_path = sys.argv[1:4]
e = json.load(open(expect_path))
r = redis.Redis.from_url(url, decode_responses=True)
h = r.hgetall(f"{prefix}:events:signup")
errs = []
total = int(h.pop("total", 0))
if total != e["total"]:
    errs.append(f"events.signup.total = {total}, expected {e['total']}")
for day, n in e["days"].items():
    got = int(h.get(day, 0))
    if got != n:
        errs.append(f"events.signup[{day}] = {got}, expected {n}")
for day in h:
    if day not in e["days"]:
        errs.append(f"unexpected day {day} = {h[day]}")
for day, n in e["unique_users"].items():
    got = r.pfcount(f"{prefix}:uu:signup:{day}")
    if abs(got - n) > 0.02 * n:
        errs.append(f"unique users {day} = {got}, expected {n} +-2%")
dl = int(r.get(f"{prefix}:dead_lettered") or 0)
if dl:
    errs.append(f"dead_lettered = {dl}, expected 0")
if errs:
    print("counters WRONG: " + "; ".join(errs))
    sys.exit(1)
print(f"counters exact: total {total}, {len(e['days'])} days exact, unique users within 2%")
