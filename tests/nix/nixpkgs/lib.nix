# The nixpkgs lib functions the flake uses, with nixpkgs' semantics, and no
# others: using one the flake does not need fails here as it would not in
# nixpkgs, so keep this list to what nix/ really calls.
let
  lower = [ "a" "b" "c" "d" "e" "f" "g" "h" "i" "j" "k" "l" "m" "n" "o" "p" "q" "r" "s" "t" "u" "v" "w" "x" "y" "z" ];
  upper = [ "A" "B" "C" "D" "E" "F" "G" "H" "I" "J" "K" "L" "M" "N" "O" "P" "Q" "R" "S" "T" "U" "V" "W" "X" "Y" "Z" ];
  hasPrefix = prefix: s: builtins.substring 0 (builtins.stringLength prefix) s == prefix;
in
{
  toUpper = builtins.replaceStrings lower upper;
  concatMapStringsSep = sep: f: list: builtins.concatStringsSep sep (map f list);
  escapeShellArg = arg: "'${builtins.replaceStrings [ "'" ] [ "'\\''" ] (toString arg)}'";
  inherit (builtins) listToAttrs concatMap any;
  inherit hasPrefix;
  optionalAttrs = cond: attrs: if cond then attrs else { };
  removePrefix =
    prefix: s:
    if hasPrefix prefix s then
      builtins.substring (builtins.stringLength prefix) (builtins.stringLength s) s
    else
      s;
  # Records what it was given; the filter is applied to sample paths by check.py.
  # As a string it is the filtered copy, as nixpkgs' is.
  cleanSourceWith =
    {
      src,
      filter,
      name ? "source",
    }:
    {
      stubCleanSourceWith = {
        inherit src name;
      };
      inherit filter;
      outPath = builtins.path {
        path = src;
        inherit name filter;
      };
    };
}
