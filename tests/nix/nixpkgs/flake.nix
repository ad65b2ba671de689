# Stub nixpkgs for the wiring test: implements just what the flake calls, and
# returns plain derivations (never built) that record the arguments they got.
{
  description = "stub nixpkgs (wiring test)";
  outputs =
    _:
    {
      legacyPackages = builtins.listToAttrs (
        map
          (system: {
            name = system;
            value = import ./pkgs.nix { inherit system; };
          })
          [
            "x86_64-linux"
            "aarch64-linux"
            "aarch64-darwin"
            "x86_64-darwin"
          ]
      );
    };
}
