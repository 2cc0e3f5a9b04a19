#!/usr/bin/env bash
# Redis goes away for 10 s in the middle of the stream (its own instance; it comes back with
# its data, like a Redis with persistence): usher keeps running, commits nothing it has not
# counted (no progress while Redis is down, never the log end), and once Redis is back every
# per-day counter is exact.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
it_init redis_outage

N=10000 USERS=2000 HALF=5000
IT_REDIS_DIR="$T/redis" IT_REDIS_NAME=outage
"$SRC_DIR/tests/harness/redis" start "$IT_REDIS_DIR" outage || fail "could not start the test's Redis"
url="$("$SRC_DIR/tests/harness/redis" url "$IT_REDIS_DIR" outage)"

create_topics 6
tk produce-signups -b "$KAFKA_BOOTSTRAP" -t "$TOPIC" -n $N -u $USERS --seed 44 --expect-only >"$T/expect.json"
tk produce-signups -b "$KAFKA_BOOTSTRAP" -t "$TOPIC" -n $N -u $USERS --seed 44 --start 0 --count $HALF >/dev/null
write_config "$T/usher.conf" "$url"
usher_start "$T/usher.conf" "$T/usher.log"

# Some progress first.
deadline=$((SECONDS + 120))
until [ "$(committed_total)" -gt 0 ]; do
  require_alive "$USHER_PID"
  [ "$SECONDS" -lt "$deadline" ] || fail "nothing committed within 120 s"
  sleep 0.1
done

"$SRC_DIR/tests/harness/redis" down "$IT_REDIS_DIR" outage || fail "could not stop the test's Redis"
t0=$(date +%s%N)
at_stop="$(committed_total)"
log "Redis down with $at_stop committed"
tk produce-signups -b "$KAFKA_BOOTSTRAP" -t "$TOPIC" -n $N -u $USERS --seed 44 --start $HALF >/dev/null

# One sample per second, on the second since Redis went down.
samples=()
for s in $(seq 1 10); do
  while [ $(( ($(date +%s%N) - t0) / 1000000 )) -lt $((s * 1000)) ]; do sleep 0.05; done
  require_alive "$USHER_PID"
  samples+=("$(committed_total)")
done
log "committed during the outage (1/s): ${samples[*]}"
for c in "${samples[@]}"; do
  [ "$c" -lt $N ] || fail "committed offsets reached the log end ($c) while Redis was down"
done
# After 5 s of outage nothing may move any more: whatever was in flight has failed and is
# being retried, and an uncounted record must never be committed.
[ "${samples[4]}" = "${samples[9]}" ] ||
  fail "committed offsets advanced while Redis was down: ${samples[4]} at 5 s, ${samples[9]} at 10 s"

"$SRC_DIR/tests/harness/redis" start "$IT_REDIS_DIR" outage || fail "could not restart the test's Redis"
log "Redis back"
wait_at_end 240 "$USHER_PID"
require_alive "$USHER_PID"
stats_json "$T/usher.conf" "$T/stats.json"
check_counts "$T/stats.json" "$T/expect.json"
usher_stop "$USHER_PID" 10
[ "$STOP_RC" = 0 ] || fail "usher exited $STOP_RC after SIGTERM, expected 0"
it_pass
