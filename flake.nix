{
  description = "Attune packs: static musl binaries for amd64 and arm64, layered images, and the packs volume";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    crane.url = "github:ipetkov/crane";
    fenix = {
      url = "github:nix-community/fenix";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  # Only wiring: every package, app and check is defined under nix/.
  outputs =
    inputs:
    let
      # Build systems. Each one builds the Linux images of both architectures;
      # on a Mac they run in Docker Desktop's Linux VM.
      systems = [
        "x86_64-linux"
        "aarch64-linux"
        "aarch64-darwin"
        "x86_64-darwin"
      ];
      perSystem = builtins.listToAttrs (
        map (system: {
          name = system;
          value = import ./nix { inherit inputs system; };
        }) systems
      );
      pick = attr: builtins.mapAttrs (_: outputs: outputs.${attr}) perSystem;
    in
    {
      packages = pick "packages";
      apps = pick "apps";
      checks = pick "checks";
      devShells = pick "devShells";
      formatter = pick "formatter";
    };
}
