# A part of the checkout as its own store path: the files and directories named
# (relative to the root) and nothing else, so a change elsewhere rebuilds nothing
# that uses it. cleanSourceWith rather than lib.fileset, which needs Nix >= 2.14's
# readFileType.
{ lib, root }:
name: tops:
lib.cleanSourceWith {
  src = root;
  inherit name;
  filter =
    path: _type:
    let
      rel = lib.removePrefix (toString root + "/") (toString path);
    in
    lib.any (top: rel == top || lib.hasPrefix (top + "/") rel) tops;
}
