#!/usr/bin/env bash
# heartbeat.sh WHAT COMMAND...: runs COMMAND and, while it runs, prints
# "... still <WHAT> (N s)" every HEARTBEAT_SECONDS (default 25), so a long silent step
# (a cold cargo build of one large crate, say) never looks like a hang. The command's own
# output and exit code pass through unchanged.
set -uo pipefail
what="$1"
shift
every="${HEARTBEAT_SECONDS:-25}"
began=$(date +%s)
(
  while sleep "$every"; do
    echo "    ... still $what ($(( $(date +%s) - began )) s)" >&2
  done
) &
beat=$!
"$@"
rc=$?
kill "$beat" 2>/dev/null
wait "$beat" 2>/dev/null
exit "$rc"
