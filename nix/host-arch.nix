# The one host-architecture rule of the flake: a build system's CPU names the
# Linux architecture whose binaries and images it uses by default. Anything
# else is refused, never mapped silently to x86_64.
{ system }:
let
  cpu = builtins.head (builtins.split "-" system);
in
if cpu == "aarch64" || cpu == "x86_64" then
  cpu
else
  throw "attune: no Linux architecture for build system ${system} (x86_64 and aarch64 only)"
