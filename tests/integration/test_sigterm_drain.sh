#!/usr/bin/env bash
# SIGTERM in the middle of a 10,000-signup stream: usher drains and exits 0 within 10 s, has
# committed progress, and what it committed is exactly what it counted; a second run finishes
# the stream and every per-day counter is exact.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
it_init sigterm_drain

N=10000 USERS=2000
create_topics 6
tk produce-signups -b "$KAFKA_BOOTSTRAP" -t "$TOPIC" -n $N -u $USERS --seed 55 >"$T/expect.json"
write_config "$T/usher.conf"
usher_start "$T/usher.conf" "$T/usher-1.log"
first=$USHER_PID

deadline=$((SECONDS + 120))
until [ "$(committed_total)" -gt 0 ]; do
  require_alive "$first"
  [ "$SECONDS" -lt "$deadline" ] || fail "nothing committed within 120 s"
  sleep 0.1
done
usher_stop "$first" 10
[ "$STOP_RC" = 0 ] || fail "usher exited $STOP_RC after SIGTERM, expected 0"
awk -v s="$STOP_SECS" 'BEGIN { exit !(s <= 10) }' || fail "drain took ${STOP_SECS}s, limit 10 s"

committed="$(committed_total)"
[ "$committed" -gt 0 ] || fail "nothing committed after the drain"
stats_json "$T/usher.conf" "$T/stats-1.json"
counted="$(jq '.events.signup.total // 0' "$T/stats-1.json")"
log "after SIGTERM: committed $committed, counted $counted of $N"
[ "$counted" = "$committed" ] ||
  fail "after a clean drain the counters ($counted) must equal the committed records ($committed)"

usher_start "$T/usher.conf" "$T/usher-2.log"
wait_at_end 180 "$USHER_PID"
stats_json "$T/usher.conf" "$T/stats.json"
check_counts "$T/stats.json" "$T/expect.json"
usher_stop "$USHER_PID" 10
[ "$STOP_RC" = 0 ] || fail "second usher exited $STOP_RC after SIGTERM, expected 0"
it_pass
