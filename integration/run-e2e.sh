#!/usr/bin/env bash
# Runs the end-to-end test binaries (integration/tests/*.rs) E2E_JOBS at a time (default 2).
# Each binary starts its own control plane, so two binaries share nothing but the machine;
# most of their time is spent waiting on timeouts, leases and scrapes, which overlap well.
# The binaries run directly (not through `cargo test`), so no cargo lock is held while they
# run. Each binary's output is printed whole when it ends; the run fails if any failed.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO="${CARGO:-cargo}"
JOBS="${E2E_JOBS:-2}"
# Each binary gets at most this long (the slowest takes about 4 min on a warm 2-core run):
# a hung test fails the run with its name instead of holding CI until CI's own deadline.
E2E_BINARY_TIMEOUT="${E2E_BINARY_TIMEOUT:-900}"
export E2E_BINARY_TIMEOUT
logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT

# The operator the tests start, built once here instead of by every test binary.
beat="$(dirname "$0")/heartbeat.sh"
"$beat" "building the operator" "$CARGO" build --locked -p cyberdesk-operator --bin cyberdesk-operator
target_dir="$("$CARGO" metadata --format-version 1 --no-deps | sed -E 's/.*"target_directory":"([^"]*)".*/\1/')"
export CYBERDESK_OPERATOR_BIN="$target_dir/debug/cyberdesk-operator"

# name<TAB>executable for every integration test target.
"$beat" "building the e2e tests" "$CARGO" test --locked -p cyberdesk-integration --tests --no-run
"$CARGO" test --locked -q -p cyberdesk-integration --tests --no-run --message-format=json \
  | grep '"kind":\["test"\]' | grep '"executable":"' \
  | sed -E 's/.*"target":\{[^}]*"name":"([^"]+)".*"executable":"([^"]+)".*/\1\t\2/' \
  > "$logs/targets"

# Longest first (figures of a warm run), so no long binary starts last.
long_first=(soak steady_state platform apiserver_restart warm_pools webhook_limits demo reconciler
  inline_user_data prometheus_scrape restart_safety leader_election)
order=()
for t in "${long_first[@]}"; do grep -q "^$t	" "$logs/targets" && order+=("$t"); done
while IFS=$'\t' read -r t _; do
  [[ " ${long_first[*]} " == *" $t "* ]] || order+=("$t")
done < <(sort "$logs/targets")
[[ ${#order[@]} -gt 0 ]] || { echo "no e2e test binaries found" >&2; exit 1; }

run_one() {
  local t="$1" logs="$2" exe start rc=0
  exe="$(grep "^$t	" "$logs/targets" | cut -f2)"
  start=$(date +%s)
  # TERM first (the harness's children die with it), KILL 30 s later if it does not end.
  (cd integration && timeout --kill-after=30 "$E2E_BINARY_TIMEOUT" "$exe") >"$logs/$t.log" 2>&1 || rc=$?
  echo "$rc" >"$logs/$t.rc"
  if [[ $rc == 124 || $rc == 137 ]]; then
    echo "=== $t: HUNG: killed after ${E2E_BINARY_TIMEOUT} s (E2E_BINARY_TIMEOUT)" >>"$logs/$t.log"
  fi
  # One writer at a time, so two binaries' output never interleaves.
  {
    flock 9
    echo "=== $t: $([[ $rc == 0 ]] && echo ok || { [[ $rc == 124 || $rc == 137 ]] && echo "HUNG (killed after ${E2E_BINARY_TIMEOUT} s)" || echo "FAILED (exit $rc)"; }) in $(($(date +%s) - start)) s"
    cat "$logs/$t.log"
  } 9>"$logs/.print"
}
export -f run_one

# Every 25 s, which binaries are still running: their output comes only when they end.
(
  while sleep 25; do
    running=()
    for f in "$logs"/*.start; do
      [[ -e "$f" ]] || continue
      t="$(basename "$f" .start)"
      [[ -e "$logs/$t.rc" ]] || running+=("$t ($(( $(date +%s) - $(cat "$f") )) s)")
    done
    ((${#running[@]})) && echo "    ... running: ${running[*]}"
  done
) &
beat_pid=$!
printf '%s\n' "${order[@]}" | xargs -P "$JOBS" -I{} bash -c 'run_one "$1" "$2"' _ {} "$logs" || true
kill "$beat_pid" 2>/dev/null || true
wait "$beat_pid" 2>/dev/null || true

failed=()
for t in "${order[@]}"; do
  [[ "$(cat "$logs/$t.rc" 2>/dev/null)" == 0 ]] || failed+=("$t")
done
if ((${#failed[@]})); then
  echo "e2e binaries that failed: ${failed[*]}" >&2
  exit 1
fi
echo "all ${#order[@]} e2e binaries passed"
