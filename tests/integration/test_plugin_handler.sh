#!/usr/bin/env bash
# A handler built outside the tree and loaded from a shared object runs on every signup exactly
# once, even when the group's records are read again from the start by a second group that
# shares the Redis prefix (its idempotency markers make the redelivery a no-op).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
it_init plugin_handler
[ -f "${HELLO_SO:-}" ] || fail "HELLO_SO is not built: ${HELLO_SO:-unset}"

N=300
create_topics 3
tk produce-signups -b "$KAFKA_BOOTSTRAP" -t "$TOPIC" -n $N -u 100 --seed 5 >"$T/expect.json"
handler="$(printf '\n[handler.hello]\nlibrary = %s\ngreeting = hi\nevents = signup\n' "$HELLO_SO")"
write_config "$T/usher.conf"
printf '%s\n' "$handler" >>"$T/usher.conf"
"$USHER_BIN" check-config -c "$T/usher.conf" >/dev/null || fail "check-config rejected the plugin"

# An unknown key of the plugin is a FILE:LINE error, like a built-in handler's.
{ cat "$T/usher.conf"; echo "colour = red"; } >"$T/bad.conf"
rc=0; "$USHER_BIN" check-config -c "$T/bad.conf" 2>"$T/err" || rc=$?
[ "$rc" = 2 ] || fail "check-config accepted an unknown plugin key (exit $rc)"
grep -q "bad.conf:$(wc -l <"$T/bad.conf"): unknown key 'colour'" "$T/err" ||
  fail "unknown plugin key error: $(cat "$T/err")"

# A plugin built for handler ABI 1 (before usher_handler.flags) still loads.
sed "s|^library = .*|library = ${HELLO_ABI1_SO:?}|" "$T/usher.conf" >"$T/abi1.conf"
"$USHER_BIN" check-config -c "$T/abi1.conf" >/dev/null || fail "check-config rejected an ABI 1 plugin"

usher_start "$T/usher.conf" "$T/usher.log"
wait_at_end 120 "$USHER_PID"
usher_stop "$USHER_PID" 10
[ "$STOP_RC" = 0 ] || fail "usher exited $STOP_RC"
n="$(redis-cli -u "$REDIS_URL" SCARD "$PREFIX:hello:hi")"
[ "$n" = $N ] || fail "the plugin saw $n distinct signups, expected $N"
ok="$("$USHER_BIN" stats --json -c "$T/usher.conf" | jq '.handlers.hello.ok')"
[ "$ok" = $N ] || fail "handlers.hello.ok = $ok, expected $N"

# Redelivery: a second group reads everything again with the same Redis prefix.
GROUP="$GROUP-again"
sed "s/^group.id = .*/group.id = $GROUP/" "$T/usher.conf" >"$T/again.conf"
usher_start "$T/again.conf" "$T/again.log"
wait_at_end 120 "$USHER_PID"
usher_stop "$USHER_PID" 10
n="$(redis-cli -u "$REDIS_URL" SCARD "$PREFIX:hello:hi")"
[ "$n" = $N ] || fail "after redelivery the plugin set has $n members, expected $N"
effects="$(redis-cli -u "$REDIS_URL" GET "$PREFIX:hello:hi:effects")"
[ "$effects" = $N ] || fail "the plugin's side effect ran $effects times for $N events"
calls="$("$USHER_BIN" stats --json -c "$T/usher.conf" | jq '.handlers.hello.ok')"
[ "$calls" = $((2 * N)) ] || fail "handlers.hello.ok = $calls, expected $((2 * N)) (each event seen twice)"
it_pass
