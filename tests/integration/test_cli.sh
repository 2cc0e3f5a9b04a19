#!/usr/bin/env bash
# The command-line contract: exit 0 / 1 / 2, help and version, FILE:LINE errors from
# check-config, USHER_CONFIG, and a clear runtime error when Redis is unreachable.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
it_init cli

# expect_rc CODE CMD...: runs CMD, fails unless it exits CODE; output in $T/out, $T/err.
expect_rc() {
  local want="$1" rc=0
  shift
  "$@" >"$T/out" 2>"$T/err" || rc=$?
  [ "$rc" = "$want" ] || fail "'$*' exited $rc, expected $want; stderr: $(head -c 400 "$T/err")"
}

expect_rc 0 "$USHER_BIN" --version
grep -q '^usher [0-9]' "$T/out" || fail "--version printed: $(cat "$T/out")"
expect_rc 0 "$USHER_BIN" --help
grep -q 'check-config' "$T/out" || fail "--help does not list the commands"
for cmd in run check-config stats; do
  expect_rc 0 "$USHER_BIN" "$cmd" --help
  grep -q "usage: usher $cmd" "$T/out" || fail "usher $cmd --help printed: $(cat "$T/out")"
done
expect_rc 0 "$USHER_BIN" dlq --help
expect_rc 2 "$USHER_BIN"
expect_rc 2 "$USHER_BIN" frobnicate
expect_rc 2 "$USHER_BIN" stats --day 2026-13-01 -c "$SRC_DIR/config/usher.conf"
expect_rc 2 "$USHER_BIN" check-config -c "$T/missing.conf"
grep -q "missing.conf" "$T/err" || fail "missing file error does not name the file"

# The shipped example validates.
expect_rc 0 "$USHER_BIN" check-config -c "$SRC_DIR/config/usher.conf"
expect_rc 0 "$USHER_BIN" check-config -c "$SRC_DIR/config/example-full.conf"

# Errors name the file and the line.
write_config "$T/good.conf"
expect_rc 0 "$USHER_BIN" check-config -c "$T/good.conf"
awk '{print} /^\[redis\]/ {print "colour = blue"}' "$T/good.conf" >"$T/bad-key.conf"
line="$(grep -n '^colour = blue' "$T/bad-key.conf" | cut -d: -f1)"
expect_rc 2 "$USHER_BIN" check-config -c "$T/bad-key.conf"
grep -q "^$T/bad-key.conf:$line: " "$T/err" || fail "unknown key error is not FILE:$line: ...: $(cat "$T/err")"
printf '\n[handler.no_such_handler]\nevents = signup\n' | cat "$T/good.conf" - >"$T/bad-handler.conf"
line="$(grep -n '^\[handler.no_such_handler\]' "$T/bad-handler.conf" | cut -d: -f1)"
expect_rc 2 "$USHER_BIN" check-config -c "$T/bad-handler.conf"
grep -q "^$T/bad-handler.conf:$line: .*no_such_handler" "$T/err" ||
  fail "unknown handler error is not FILE:$line: ...: $(cat "$T/err")"
sed 's/^events = \*$/events = signup, teleported/' "$T/good.conf" >"$T/bad-event.conf"
line="$(grep -n '^events = signup, teleported' "$T/bad-event.conf" | cut -d: -f1)"
expect_rc 2 "$USHER_BIN" check-config -c "$T/bad-event.conf"
grep -q "^$T/bad-event.conf:$line: .*teleported" "$T/err" ||
  fail "unknown event type error is not FILE:$line: ...: $(cat "$T/err")"

# A handler's own start-up check (init) is part of check-config: a missing template is a
# configuration error that names the file.
printf '\n[handler.welcome_email]\nsmtp_url = smtp://127.0.0.1:9\nfrom = a@example.com\ntemplate_text = %s\n' \
  "$T/no-such-template.txt" | cat "$T/good.conf" - >"$T/bad-template.conf"
expect_rc 2 "$USHER_BIN" check-config -c "$T/bad-template.conf"
grep -q "no-such-template.txt" "$T/err" || fail "missing template error does not name it: $(cat "$T/err")"

# USHER_CONFIG is the default path.
USHER_CONFIG="$T/bad-key.conf" expect_rc 2 "$USHER_BIN" check-config
USHER_CONFIG="$T/good.conf" expect_rc 0 "$USHER_BIN" check-config

# ${VAR} without a value is a configuration error; with it, the value is used.
sed 's|^key_prefix = .*|key_prefix = ${IT_CLI_PREFIX}|' "$T/good.conf" >"$T/env.conf"
expect_rc 2 env -u IT_CLI_PREFIX "$USHER_BIN" check-config -c "$T/env.conf"
grep -q "IT_CLI_PREFIX" "$T/err" || fail "unset variable error does not name it: $(cat "$T/err")"
IT_CLI_PREFIX=cli expect_rc 0 "$USHER_BIN" check-config -c "$T/env.conf"

# Redis unreachable: stats is a runtime failure (1), not a config error.
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
write_config "$T/noredis.conf" "redis://127.0.0.1:$port"
expect_rc 1 "$USHER_BIN" stats -c "$T/noredis.conf"
grep -qi "redis" "$T/err" || fail "stats without Redis gave no Redis error: $(cat "$T/err")"

# A fresh prefix has empty but well-formed stats.
expect_rc 0 "$USHER_BIN" stats --json -c "$T/good.conf"
jq -e '.events == {} and .handlers == {} and .dead_lettered == 0 and .unique_users == {}' \
  "$T/out" >/dev/null || fail "empty stats are not the documented shape: $(cat "$T/out")"
it_pass
