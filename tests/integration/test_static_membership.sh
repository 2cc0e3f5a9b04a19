#!/usr/bin/env bash
# Static membership (group.instance.id): a member restarted within session.timeout.ms gets its
# partitions back and the other member is never revoked; the totals stay exact.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
it_init static_membership

N=4000 USERS=800
create_topics 4
tk produce-signups -b "$KAFKA_BOOTSTRAP" -t "$TOPIC" -n $N -u $USERS --seed 21 --expect-only >"$T/expect.json"
tk produce-signups -b "$KAFKA_BOOTSTRAP" -t "$TOPIC" -n $N -u $USERS --seed 21 --start 0 --count 2000 >/dev/null
for i in 1 2; do
  write_config "$T/m$i.conf" "$REDIS_URL" "report_interval_ms = 300"
  sed -i "s/^session.timeout.ms = .*/session.timeout.ms = 15000\ngroup.instance.id = $GROUP-m$i/" "$T/m$i.conf"
  "$USHER_BIN" check-config -c "$T/m$i.conf" >/dev/null || fail "config m$i rejected"
done
usher_start "$T/m1.conf" "$T/m1.log"; A=$USHER_PID
usher_start "$T/m2.conf" "$T/m2.log"; B=$USHER_PID

# Both members hold two partitions each before the restart (as they report it in Redis; the
# first one may have held all four for a moment).
deadline=$((SECONDS + 60))
until "$USHER_BIN" stats --json -c "$T/m1.conf" 2>/dev/null |
      jq -e '[.members[] | select(.alive and .partitions == 2)] | length == 2' >/dev/null; do
  [ "$SECONDS" -lt "$deadline" ] || fail "the two members did not settle on two partitions each"
  require_alive "$A" "$B"
  sleep 0.2
done
m1_lines="$(wc -l <"$T/m1.log")"
usher_stop "$B" 10
[ "$STOP_RC" = 0 ] || fail "member 2 exited $STOP_RC"
usher_start "$T/m2.conf" "$T/m2b.log"; B=$USHER_PID
tk produce-signups -b "$KAFKA_BOOTSTRAP" -t "$TOPIC" -n $N -u $USERS --seed 21 --start 2000 >/dev/null
wait_at_end 120 "$A" "$B"

grep -q 'assigned 2 partition' "$T/m2b.log" || fail "the restarted member did not get its two partitions back"
if tail -n +"$((m1_lines + 1))" "$T/m1.log" | grep -Eq 'assigned|revoking|lost'; then
  fail "member 1 was rebalanced by a restart within the session timeout: $(tail -n +"$((m1_lines + 1))" "$T/m1.log" | grep -E 'assigned|revoking|lost')"
fi
stats_json "$T/m1.conf" "$T/stats.json"
check_counts "$T/stats.json" "$T/expect.json"
usher_stop "$A" 10
usher_stop "$B" 10
it_pass
