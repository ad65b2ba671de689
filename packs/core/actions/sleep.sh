#!/bin/sh
# core.sleep: prints ATTUNE_MESSAGE if given, then waits ATTUNE_SECONDS seconds.
set -eu
seconds="${ATTUNE_SECONDS-1}"
case "$seconds" in
  ''|*[!0-9]*) echo "core.sleep: seconds must be a whole number from 0 to 3600, got '$seconds'" >&2; exit 2 ;;
esac
if [ "$seconds" -gt 3600 ]; then
  echo "core.sleep: seconds must be at most 3600, got $seconds" >&2
  exit 2
fi
if [ -n "${ATTUNE_MESSAGE-}" ]; then
  printf '%s\n' "$ATTUNE_MESSAGE"
fi
sleep "$seconds"
