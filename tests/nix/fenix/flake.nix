# Stub fenix for the wiring test: components and combine, recorded by name.
{
  description = "stub fenix (wiring test)";
  # Replaced by the flake's own nixpkgs through `follows`; never fetched.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
  outputs =
    { nixpkgs, ... }:
    {
      packages = builtins.mapAttrs (
        _system: pkgs:
        let
          component = name: pkgs.stubRecord "fenix.component" name { } // { inherit name; };
          profile = prefix: {
            cargo = component "${prefix}cargo";
            rustc = component "${prefix}rustc";
            clippy = component "${prefix}clippy";
            rustfmt = component "${prefix}rustfmt";
            rust-std = component "${prefix}rust-std";
          };
          targets = [
            "x86_64-unknown-linux-musl"
            "aarch64-unknown-linux-musl"
            "x86_64-unknown-linux-gnu"
            "aarch64-unknown-linux-gnu"
          ];
        in
        {
          combine =
            components:
            pkgs.stubRecord "fenix.combine" "rust-toolchain" { components = map (c: c.name) components; };
          stable = profile "stable-";
          targets = builtins.listToAttrs (
            map (t: {
              name = t;
              value.stable = profile "${t}-stable-";
            }) targets
          );
        }
      ) nixpkgs.legacyPackages;
    };
}
