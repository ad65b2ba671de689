# The few nixpkgs lib functions the flake uses, with nixpkgs' semantics.
let
  lower = [ "a" "b" "c" "d" "e" "f" "g" "h" "i" "j" "k" "l" "m" "n" "o" "p" "q" "r" "s" "t" "u" "v" "w" "x" "y" "z" ];
  upper = [ "A" "B" "C" "D" "E" "F" "G" "H" "I" "J" "K" "L" "M" "N" "O" "P" "Q" "R" "S" "T" "U" "V" "W" "X" "Y" "Z" ];
in
{
  toUpper = builtins.replaceStrings lower upper;
  concatMapStringsSep = sep: f: list: builtins.concatStringsSep sep (map f list);
  escapeShellArg = arg: "'${builtins.replaceStrings [ "'" ] [ "'\\''" ] (toString arg)}'";
  inherit (builtins) listToAttrs concatMap;
  fileset = {
    unions = list: { stubFileset = list; };
    toSource = { root, fileset }: { stubSource = { inherit root fileset; }; };
  };
}
