#!/usr/bin/env bash
# 10,000 signups from 2,000 users in eight IdP formats on a 6-partition topic: once the group
# has committed the log end, every per-day counter is exact, unique users per day are within
# 2% (HyperLogLog), nothing was dead-lettered, and SIGTERM then exits 0. Then 5,000 more, read
# by a second group under the same key prefix from the start: it gets every record again, the
# first 10,000 already counted and the new ones not (batches mixing both at the boundary), and
# the counters are exact for all 15,000.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
it_init counts_exact

N=10000 MORE=5000 USERS=2000
create_topics 6
tk produce-signups -b "$KAFKA_BOOTSTRAP" -t "$TOPIC" -n $((N + MORE)) -u $USERS --seed 11 \
  --count $N >"$T/expect.json"
[ "$(jq .total "$T/expect.json")" = $N ] || fail "testkit produced $(jq .total "$T/expect.json"), not $N"

write_config "$T/usher.conf"
usher_start "$T/usher.conf" "$T/usher.log"
wait_at_end 180 "$USHER_PID"

stats_json "$T/usher.conf" "$T/stats.json"
check_counts "$T/stats.json" "$T/expect.json"
ok="$(jq '.handlers.signup_counters.ok // null' "$T/stats.json")"
[ "$ok" = $N ] || fail "handlers.signup_counters.ok = $ok, expected $N (one successful run per event)"
[ "$(dlq_count)" = 0 ] || fail "dead-letter topic $DLQ is not empty"

# Still at the end (nothing committed past it, nothing left behind).
lag="$(offsets_table | awk '$1 == "lag" { print $2 }')"
[ "$lag" = 0 ] || fail "lag after stats is $lag, expected 0"

usher_stop "$USHER_PID" 10
[ "$STOP_RC" = 0 ] || fail "usher exited $STOP_RC after SIGTERM, expected 0"

# A redelivery of everything: a second group, the same key prefix (and so the same fences).
tk produce-signups -b "$KAFKA_BOOTSTRAP" -t "$TOPIC" -n $((N + MORE)) -u $USERS --seed 11 \
  --start $N --count $MORE >/dev/null
tk produce-signups -b "$KAFKA_BOOTSTRAP" -t "$TOPIC" -n $((N + MORE)) -u $USERS --seed 11 \
  --expect-only >"$T/expect-all.json"
GROUP="$GROUP-again"
write_config "$T/usher-again.conf"
usher_start "$T/usher-again.conf" "$T/usher-again.log"
wait_at_end 180 "$USHER_PID"
stats_json "$T/usher-again.conf" "$T/stats-again.json"
check_counts "$T/stats-again.json" "$T/expect-all.json"
ok="$(jq '.handlers.signup_counters.ok // null' "$T/stats-again.json")"
[ "$ok" = $((2 * N + MORE)) ] ||
  fail "handlers.signup_counters.ok = $ok, expected $((2 * N + MORE)) (every record of both runs)"
usher_stop "$USHER_PID" 10
[ "$STOP_RC" = 0 ] || fail "usher exited $STOP_RC after SIGTERM, expected 0"
it_pass
