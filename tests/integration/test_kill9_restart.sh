#!/usr/bin/env bash
# kill -9 in the middle of a 10,000-signup stream, restart: the group resumes from its last
# commit, the redelivered records are not counted twice, and every per-day counter is exact.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
it_init kill9_restart

N=10000 USERS=2000
create_topics 6
tk produce-signups -b "$KAFKA_BOOTSTRAP" -t "$TOPIC" -n $N -u $USERS --seed 22 >"$T/expect.json"
write_config "$T/usher.conf"
usher_start "$T/usher.conf" "$T/usher-1.log"
first=$USHER_PID

# Kill when 20%..80% is committed, or 1.5 s after the first commit if it is faster than we poll.
deadline=$((SECONDS + 120)) first_commit_ms=""
while :; do
  require_alive "$first"
  c="$(committed_total)"
  now_ms=$(($(date +%s%N) / 1000000))
  if [ "$c" -gt 0 ] && [ -z "$first_commit_ms" ]; then first_commit_ms=$now_ms; fi
  if [ "$c" -ge $((N * 20 / 100)) ] && [ "$c" -le $((N * 80 / 100)) ]; then break; fi
  if [ -n "$first_commit_ms" ] && [ $((now_ms - first_commit_ms)) -ge 1500 ]; then break; fi
  [ "$SECONDS" -lt "$deadline" ] || fail "usher committed nothing within 120 s (committed $c)"
  sleep 0.1
done
kill -KILL "$first"
wait "$first" 2>/dev/null || true
at_kill="$(committed_total)"
log "kill -9 with $at_kill of $N committed"
[ "$at_kill" -lt $N ] || log "WARNING: usher had committed everything before the kill; restart path only"

usher_start "$T/usher.conf" "$T/usher-2.log"
wait_at_end 240 "$USHER_PID"
stats_json "$T/usher.conf" "$T/stats.json"
check_counts "$T/stats.json" "$T/expect.json"
usher_stop "$USHER_PID" 10
[ "$STOP_RC" = 0 ] || fail "restarted usher exited $STOP_RC after SIGTERM, expected 0"
it_pass
