# Everything for one build system (x86_64-linux, aarch64-linux, aarch64-darwin,
# x86_64-darwin): packages, apps, checks, devShells, formatter. Both Linux
# architectures are cross-built from this system, with Zig as C toolchain.
{ inputs, system }:
let
  pkgs = inputs.nixpkgs.legacyPackages.${system};
  inherit (pkgs) lib;
  root = ../.;
  targets = import ./targets.nix { inherit (inputs) nixpkgs; };
  toolchain = import ./toolchain.nix {
    inherit targets;
    fenix = inputs.fenix.packages.${system};
  };
  # The Linux architecture of this machine: on a Mac, the one Docker Desktop's
  # engine runs natively (arm64 on Apple Silicon).
  hostArch = import ./host-arch.nix { inherit system targets; };

  perArch =
    arch:
    let
      target = targets.${arch};
      rust = import ./rust.nix {
        inherit pkgs toolchain root target;
        inherit (inputs) crane;
      };
      pack-binaries = pkgs.callPackage ./pack-binaries.nix {
        inherit target;
        inherit (rust) timer-sensor;
      };
    in
    {
      inherit target rust pack-binaries;
      images = pkgs.callPackage ./images.nix {
        inherit target pack-binaries;
        inherit (rust) services;
      };
    };
  arches = {
    x86_64 = perArch "x86_64";
    aarch64 = perArch "aarch64";
  };
  # packs-assemble runs at build time, so it is this system's build.
  packs-assemble = import ./build-tools.nix {
    inherit pkgs toolchain root;
    inherit (inputs) crane;
    linuxBuild = arches.${hostArch}.rust.services;
  };
  volume =
    arch:
    pkgs.callPackage ./volume.nix {
      inherit (arches.${arch}) target pack-binaries;
      inherit packs-assemble;
      packs = root + "/packs";
    };
  packsImage =
    arch:
    pkgs.callPackage ./packs-image.nix {
      inherit (arches.${arch}) target;
      inherit (arches.${arch}.rust) services;
      inherit packs-assemble;
      volume = volume arch;
    };
  images = {
    amd64 = arches.x86_64.images // {
      packs = packsImage "x86_64";
    };
    arm64 = arches.aarch64.images // {
      packs = packsImage "aarch64";
    };
  };

  packages =
    {
      # Architectures are named as Docker names them (amd64, arm64), like every
      # other output; the x86_64/aarch64 names stay as aliases of the same packages.
      pack-binaries-amd64 = arches.x86_64.pack-binaries;
      pack-binaries-arm64 = arches.aarch64.pack-binaries;
      pack-binaries-x86_64 = arches.x86_64.pack-binaries;
      pack-binaries-aarch64 = arches.aarch64.pack-binaries;
      pack-binaries = arches.${hostArch}.pack-binaries;
      default = arches.${hostArch}.pack-binaries;
      services-amd64 = arches.x86_64.rust.services;
      services-arm64 = arches.aarch64.rust.services;
      services-x86_64 = arches.x86_64.rust.services;
      services-aarch64 = arches.aarch64.rust.services;
      packs-volume-amd64 = volume "x86_64";
      packs-volume-arm64 = volume "aarch64";
      packs-image-amd64 = images.amd64.packs;
      packs-image-arm64 = images.arm64.packs;
      inherit packs-assemble;
    }
    // lib.listToAttrs (
      lib.concatMap (
        arch:
        map (name: {
          name = "image-${name}-${arch}";
          value = images.${arch}.${name};
        }) images.${arch}.names
      ) [ "amd64" "arm64" ]
    );
in
{
  inherit packages;

  # Imported, not callPackage'd: callPackage adds `override` and
  # `overrideDerivation` to the set, which are not apps (`nix flake show` fails).
  apps = import ./apps.nix {
    inherit (pkgs) writeShellScript lib;
    inherit images packs-assemble;
    # docker/stack and docker/publish with what they source and call from
    # beside them (scripts/lib, scripts/host-arch, arches.tsv), as in a checkout.
    docker = "${
      import ./source.nix { inherit lib root; } "attune-scripts" [
        "docker"
        "scripts"
        "arches.tsv"
      ]
    }/docker";
    hostArch = arches.${hostArch}.target.docker;
  };

  checks = import ./checks.nix {
    inherit pkgs lib root packages packs-assemble;
    rust = arches.${hostArch}.rust // {
      inherit (arches.${hostArch}.target) arch docker;
    };
    # User-mode emulation only (nixpkgs' own choice for running foreign
    # binaries); a Mac runs no Linux binary at build time.
    qemuAarch64 =
      if pkgs.stdenv.isDarwin then
        null
      else if hostArch == "aarch64" then
        "${pkgs.coreutils}/bin/env"
      else
        "${pkgs.qemu-user}/bin/qemu-aarch64";
  };

  # The same Zig recipe as the flake's builds, for scripts/build-pack-binaries.
  devShells.default = pkgs.mkShell {
    packages = [
      toolchain
      pkgs.zig
      pkgs.cargo-zigbuild
      pkgs.cargo-nextest
      pkgs.cargo-deny
      pkgs.skopeo
      pkgs.docker-compose
      pkgs.shellcheck
    ];
  };

  # `nix fmt` passes no path since Nix 2.25; nixfmt-tree formats the whole tree.
  formatter = pkgs.nixfmt-tree;
}
