#!/bin/sh
# core.noop: logs ATTUNE_MESSAGE if given, then exits with ATTUNE_EXIT_CODE (default 0).
if [ -n "${ATTUNE_MESSAGE-}" ]; then
  printf 'core.noop: %s\n' "$ATTUNE_MESSAGE" >&2
fi
code="${ATTUNE_EXIT_CODE-0}"
case "$code" in
  ''|*[!0-9]*) echo "core.noop: exit_code must be a whole number from 0 to 255, got '$code'" >&2; exit 2 ;;
esac
exit "$code"
