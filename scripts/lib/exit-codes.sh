# shellcheck shell=bash
# The exit codes of every script, defined once, and the helpers that print a
# message and exit with one. The same four codes as the binaries'
# (crates/attune-contract/src/exit.rs; tests/help/run checks that they agree):
#
#   0  EXIT_OK     success
#   1  EXIT_INPUT  the input is wrong (a pack, a requirement, an image's layout)
#   2  EXIT_USAGE  usage: a flag, argument or setting is missing or wrong
#   3  EXIT_ENV    the environment failed: I/O, a lock, the Docker engine, a
#                  missing tool, a build or download that failed
#
# Sourced, never run. Each script finds it by a path from its own directory,
# which the directive repeats for shellcheck (.shellcheckrc: source-path=SCRIPTDIR):
#
#   # shellcheck source=../scripts/lib/exit-codes.sh
#   . "$(dirname "$0")/../scripts/lib/exit-codes.sh"       # in docker/
#
#   die_usage "--arch is amd64 or arm64, not '$arch'"   # "<script>: --arch ..." on stderr, exit 2
#   die_env "skopeo is missing: apt-get install skopeo"  # exit 3
#   usage_error "scripts/dev-up [--check]"               # "usage: scripts/dev-up [--check]", exit 2
#   some_command || exit "$EXIT_ENV"                      # after printing something else
#
# <script> is $EXIT_PROG when the script sets it (tests/repro/run does: its file is
# `run`), else the script's file name. tests/help/run fails on a literal
# `exit 2` or `exit 3` in any other script, and on a script that uses these
# names without sourcing this file.

# shellcheck disable=SC2034 # used by the scripts that source this file
EXIT_OK=0 EXIT_INPUT=1 EXIT_USAGE=2 EXIT_ENV=3

# CODE MESSAGE...: "<script>: MESSAGE" on stderr, then exit CODE.
die() {
  local code=$1
  shift
  printf '%s: %s\n' "${EXIT_PROG:-${0##*/}}" "$*" >&2
  exit "$code"
}
die_input() { die "$EXIT_INPUT" "$@"; }
die_usage() { die "$EXIT_USAGE" "$@"; }
die_env() { die "$EXIT_ENV" "$@"; }
# SYNOPSIS: "usage: SYNOPSIS" on stderr, then exit 2.
usage_error() {
  printf 'usage: %s\n' "$*" >&2
  exit "$EXIT_USAGE"
}
