# The one host-architecture rule of the flake: a build system's CPU names the
# Linux architecture whose binaries and images it uses by default, when it is
# one of nix/targets.nix (arches.tsv). Anything else is refused, never mapped
# silently to x86_64.
{ system, targets }:
let
  cpu = builtins.head (builtins.split "-" system);
in
if targets ? ${cpu} then
  cpu
else
  throw "attune: no Linux architecture for build system ${system} (${builtins.concatStringsSep " and " (builtins.attrNames targets)} only)"
