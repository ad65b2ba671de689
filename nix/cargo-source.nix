# The source of every cargo build and check: crane's Cargo sources (.rs, .toml,
# Cargo.lock), the table of architectures (arches.tsv) that attune-pack
# compiles in and the service image layout (crates/attune-image/services.json)
# that attune-image compiles in (include_str!), which crane's filter alone
# would leave out.
{
  lib,
  craneLib,
  root,
}:
lib.cleanSourceWith {
  src = root;
  name = "source";
  filter =
    path: type:
    craneLib.filterCargoSources path type
    || builtins.elem (toString path) [
      (toString root + "/arches.tsv")
      (toString root + "/crates/attune-image/services.json")
    ];
}
