#!/usr/bin/env bash
# Two usher processes in one group share a 6-partition topic: each logs the partitions it was
# assigned, together they count 10,000 signups exactly, and both are still running at the end.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
it_init two_members

N=10000 USERS=2000
create_topics 6
write_config "$T/usher.conf"
usher_start "$T/usher.conf" "$T/usher-a.log"; a=$USHER_PID
usher_start "$T/usher.conf" "$T/usher-b.log"; b=$USHER_PID

# has_partitions LOG: the member logged an assignment naming partitions of our topic.
has_partitions() { grep -i 'assigned' "$1" | grep -F "$TOPIC" >/dev/null; }

# Both members must hold partitions before the stream starts.
deadline=$((SECONDS + 60))
until has_partitions "$T/usher-a.log" && has_partitions "$T/usher-b.log"; do
  require_alive "$a" "$b"
  [ "$SECONDS" -lt "$deadline" ] ||
    fail "within 60 s not both members logged an 'assigned' line naming $TOPIC partitions"
  sleep 0.2
done

tk produce-signups -b "$KAFKA_BOOTSTRAP" -t "$TOPIC" -n $N -u $USERS --seed 33 >"$T/expect.json"
wait_at_end 180 "$a" "$b"
require_alive "$a" "$b"

for m in a b; do
  log "member $m: $(grep -i 'assigned' "$T/usher-$m.log" | grep -F "$TOPIC" | tr '\n' '|')"
done

stats_json "$T/usher.conf" "$T/stats.json"
check_counts "$T/stats.json" "$T/expect.json"
usher_stop "$a" 10; rc_a=$STOP_RC
usher_stop "$b" 10; rc_b=$STOP_RC
{ [ "$rc_a" = 0 ] && [ "$rc_b" = 0 ]; } || fail "exit status after SIGTERM: a=$rc_a b=$rc_b, expected 0 and 0"
it_pass
