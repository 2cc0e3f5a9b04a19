# shellcheck shell=bash
# shellcheck disable=SC2153 # SRC_DIR, USHER_BIN, ... come from ctest's ENVIRONMENT and lib.sh
# Helpers for the scale-out tests (test_key_ordering, test_slow_handler_no_eviction,
# test_lag_stats, test_chaos), sourced after lib.sh and it_init. Not a test itself (the ctest
# glob takes test_*.sh only). Their sinks come from lib.sh's start_sinks.

# sink_mode JSON: replaces the HTTP sink's fault mode (tests/servers/README.md); fails unless
# the sink accepted it.
sink_mode() {
  local out
  out="$(curl -sS -f -X POST -d "$1" "$HTTP_SINK_URL/_control/mode" 2>&1)" ||
    fail "HTTP sink refused mode $1: $out"
}

# scale_conf_set FILE KEY VALUE: replaces the line "KEY = ..." of FILE (it must be there once).
scale_conf_set() {
  local file="$1" key="$2" value="$3" n
  n="$(grep -c "^$key = " "$file" || true)"
  [ "$n" = 1 ] || fail "scale_conf_set: '$key' is set $n times in $file, expected once"
  sed -i "s|^$key = .*|$key = $value|" "$file"
}

# scale_conf_check FILE: usher check-config must accept FILE.
scale_conf_check() {
  local out
  out="$("$USHER_BIN" check-config -c "$1" 2>&1)" || fail "usher check-config rejected $1: $out"
}

# elapsed_since T0_NS: seconds (2 decimals) since T0_NS (date +%s%N).
elapsed_since() {
  awk -v ns=$(($(date +%s%N) - $1)) 'BEGIN { printf "%.2f", ns / 1e9 }'
}

# check_mixed_counts STATS EXPECT: for every event type in EXPECT (testkit produce-mixed) the
# total and every per-day count in STATS are exact, no type or day is counted that was not
# produced, and distinct users per day are within 2% (HyperLogLog). Prints the totals.
check_mixed_counts() {
  local errors
  errors="$(jq -nr --slurpfile s "$1" --slurpfile e "$2" '
    ($s[0]) as $s | ($e[0]) as $e |
    def absdiff(a; b): if a > b then a - b else b - a end;
    ($e.events | to_entries[] | .key as $t | .value as $x | ($s.events[$t] // {}) as $got |
      (if $got.total != $x.total then "events.\($t).total = \($got.total), expected \($x.total)" else empty end),
      ($x.days | to_entries[] | select($got.days[.key] != .value)
        | "events.\($t).days[\(.key)] = \($got.days[.key]), expected \(.value)"),
      (($got.days // {}) | to_entries[] | select($x.days[.key] == null)
        | "events.\($t).days has unexpected day \(.key) = \(.value)")),
    (($s.events // {}) | keys[] | select($e.events[.] == null) | "events.\(.) counted but never produced"),
    ($e.unique_users | to_entries[] | .key as $t | .value | to_entries[] | . as $x
       | ($s.unique_users[$t][$x.key]) as $a
       | select($a == null or absdiff($a; $x.value) > 0.02 * $x.value + 1)
       | "unique_users.\($t)[\($x.key)] = \($a), expected \($x.value) +-2%")
  ')" || fail "jq could not evaluate the stats $1"
  if [ -n "$errors" ]; then
    echo "usher stats: $(jq -c '{events, unique_users}' "$1")" >&2
    fail "counters wrong:"$'\n'"$errors"
  fi
  log "counters exact per type and day: $(jq -c '.events | with_entries(.value |= .total)' "$1")"
}
