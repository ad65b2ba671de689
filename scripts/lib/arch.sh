# shellcheck shell=bash
# The architectures the scripts build for and every name each one goes by,
# read from arches.tsv at the repository root, the one table that Rust
# (attune_pack::Arch) and the flake (nix/targets.nix) read too. Columns are
# found by the names on the table's first line, so their order is free.
# Sourced after scripts/lib/exit-codes.sh, never run:
#
#   # shellcheck source=lib/exit-codes.sh
#   . "$(dirname "$0")/lib/exit-codes.sh"       # in scripts/
#   # shellcheck source=lib/arch.sh
#   . "$(dirname "$0")/lib/arch.sh"
#
#   arch_list                 every arch, in the table's order: amd64 arm64
#   arch_choices WORD         them joined by WORD, for a message: `arch_choices or`
#                             is amd64 or arm64
#   arch_require WHAT NAME    nothing if NAME is an arch; else, on stderr,
#                             "<script>: WHAT is amd64 or arm64, not 'NAME'" and exit 2
#   arch_of NAME              the arch NAME is a name of (amd64 for amd64, x86_64
#                             or x86-64; arm64 for arm64 or aarch64), or status 1
#   arch_field ARCH COLUMN    a column of ARCH's row: `arch_field arm64 rust_musl`
#                             is aarch64-unknown-linux-musl (columns: arches.tsv)
#
# tests/help/run fails on a script that names a Rust target triple itself, and
# on one that uses these names without sourcing this file.

ARCHES_TSV=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/arches.tsv

# The table's lines that are not comments: the column names, then a row per arch
# (each ending in a newline, the last one too, so that `read` sees it).
_arch_lines() {
  { cat "$ARCHES_TSV"; echo; } | sed -e '/^[[:space:]]*#/d' -e '/^[[:space:]]*$/d'
}

# ARCH COLUMN: sets _arch_value to that column of ARCH's row; status 1 if no
# row is ARCH's. A missing table or column is the checkout's fault: exit 3.
_arch_lookup() {
  local h f i col=''
  [ -f "$ARCHES_TSV" ] || die_env "$ARCHES_TSV is missing: the table of architectures"
  {
    read -r -a h
    [ "${h[0]:-}" = arch ] || die_env "$ARCHES_TSV: the first column is not 'arch'"
    for i in "${!h[@]}"; do
      if [ "${h[i]}" = "$2" ]; then col=$i; fi
    done
    [ -n "$col" ] || die_env "$ARCHES_TSV has no column '$2' (its columns: ${h[*]})"
    while read -r -a f; do
      if [ "${f[0]}" = "$1" ]; then
        _arch_value=${f[col]}
        return 0
      fi
    done
  } < <(_arch_lines)
  return 1
}

arch_list() {
  [ -f "$ARCHES_TSV" ] || die_env "$ARCHES_TSV is missing: the table of architectures"
  local a _ list=''
  while read -r a _; do list="$list${list:+ }$a"; done < <(_arch_lines | sed 1d)
  echo "$list"
}

arch_choices() { # WORD
  local list
  list=$(arch_list)
  echo "${list// / $1 }"
}

arch_require() { # WHAT NAME
  case " $(arch_list) " in
    *" $2 "*) if [ -n "$2" ]; then return 0; fi ;;
  esac
  die_usage "$1 is $(arch_choices or), not '$2'"
}

arch_of() { # NAME
  local a names
  [ -n "$1" ] || return 1
  for a in $(arch_list); do
    _arch_lookup "$a" machine
    names=",$a,$_arch_value"
    _arch_lookup "$a" aliases
    [ "$_arch_value" = - ] || names="$names,$_arch_value"
    case "$names," in
      *",$1,"*)
        echo "$a"
        return 0
        ;;
    esac
  done
  return 1
}

arch_field() { # ARCH COLUMN
  _arch_lookup "$1" "$2" || die_usage "'$1' is not an architecture of $ARCHES_TSV ($(arch_choices or))"
  echo "$_arch_value"
}
