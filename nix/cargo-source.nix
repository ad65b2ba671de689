# The source of every cargo build and check: crane's Cargo sources (.rs, .toml,
# Cargo.lock), and the table of architectures (arches.tsv) that attune-pack
# compiles in (include_str!), which crane's filter alone would leave out.
{
  lib,
  craneLib,
  root,
}:
lib.cleanSourceWith {
  src = root;
  name = "source";
  filter =
    path: type: craneLib.filterCargoSources path type || toString path == toString root + "/arches.tsv";
}
