# The architectures we build for, from arches.tsv (the table Rust's
# attune_pack::Arch and the scripts read too), keyed by their Rust/Nix name:
# Rust target, Zig target, Docker name and Nix system. The C toolchain of every
# musl target is Zig's (nix/zig.nix), from any build system. What the worker
# image only copies (bash, coreutils, python3) comes from nixpkgs' own package
# set of that Linux system, which the binary cache holds (a Mac substitutes
# it), not from a cross build.
{ nixpkgs }:
let
  # The table's lines that are not comments, each split at runs of blanks; the
  # first names the columns.
  lines = builtins.filter (l: l != "" && builtins.substring 0 1 l != "#") (
    builtins.filter builtins.isString (builtins.split "\n" (builtins.readFile ../arches.tsv))
  );
  fields = line: builtins.filter (f: builtins.isString f && f != "") (builtins.split "[ \t]+" line);
  columns = fields (builtins.head lines);
  row =
    line:
    let
      values = fields line;
    in
    if builtins.length values != builtins.length columns then
      throw "attune: arches.tsv: `${line}` has ${toString (builtins.length values)} fields, the table ${toString (builtins.length columns)}"
    else
      builtins.listToAttrs (
        builtins.genList (i: {
          name = builtins.elemAt columns i;
          value = builtins.elemAt values i;
        }) (builtins.length columns)
      );
in
builtins.listToAttrs (
  map (
    line:
    let
      r = row line;
    in
    {
      name = r.machine;
      value = {
        arch = r.machine;
        docker = r.arch;
        system = r.nix_system;
        rustTarget = r.rust_musl;
        zigTarget = r.zig;
        # Packages that run inside the worker image (bash, coreutils, python3).
        runtime = nixpkgs.legacyPackages.${r.nix_system};
      };
    }
  ) (builtins.tail lines)
)
