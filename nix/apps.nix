# `nix run .#up` (this system's architecture), `.#up-amd64`, `.#up-arm64`,
# `.#down`, `.#logs`: thin wrappers around docker/stack, which loads only the
# images whose tag is missing and drives docker compose (v2) or docker-compose
# (v1). Each `up` depends on the image streams of its own architecture only, so
# `nix run .#up` never builds the other one. `.#publish -- REGISTRY/PREFIX`
# loads every image of both architectures (the packs image, a docker archive
# written by packs-assemble export, included) and runs docker/publish.
{
  writeShellScript,
  lib,
  docker,
  hostArch,
  images,
  packs-assemble,
}:
let
  specs =
    arch:
    lib.concatMapStringsSep " " (
      name: lib.escapeShellArg "attune/${name}:${images.${arch}.tag}=${images.${arch}.${name}}"
    ) images.${arch}.names;
  # Run from a checkout: packs, packs.dev and .env are the user's.
  userFiles = ''
    export ATTUNE_PACKS_SOURCE=''${ATTUNE_PACKS_SOURCE:-$PWD/packs}
    export ATTUNE_PACKS_DEV=''${ATTUNE_PACKS_DEV:-$PWD/packs.dev}
    export ATTUNE_ENV_FILE=''${ATTUNE_ENV_FILE:-$PWD/.env}
  '';
  up =
    arch:
    writeShellScript "attune-up-${arch}" ''
      set -euo pipefail
      if [ -n "''${ATTUNE_ARCH:-}" ] && [ "$ATTUNE_ARCH" != ${arch} ]; then
        echo "ATTUNE_ARCH=$ATTUNE_ARCH, but this app starts the ${arch} images: nix run .#up-$ATTUNE_ARCH" >&2
        exit 2
      fi
      export ATTUNE_ARCH=${arch} ATTUNE_IMAGE_TAG=${images.${arch}.tag}
      # The Nix agent image fills the agent volume; the Nix worker image (the
      # static services and nixpkgs' python3) is the Python runtime.
      export ATTUNE_AGENT_IMAGE=''${ATTUNE_AGENT_IMAGE:-attune/agent:${images.${arch}.tag}}
      export ATTUNE_PYTHON_IMAGE=''${ATTUNE_PYTHON_IMAGE:-attune/worker:${images.${arch}.tag}}
      ${userFiles}
      exec ${docker}/stack up ${specs arch} "$@"
    '';
  # name:image-tag=stream for one architecture, every image docker/publish sends.
  published =
    arch:
    lib.concatMapStringsSep " " (
      name: lib.escapeShellArg "${name}:${images.${arch}.${name}.imageTag}=${images.${arch}.${name}}"
    ) [ "packs-init" "api" "worker" "sensor" "packs" ];
  publish = writeShellScript "attune-publish" ''
    set -euo pipefail
    [ $# -ge 1 ] || { echo "usage: nix run .#publish -- REGISTRY/PREFIX [TAG]" >&2; exit 2; }
    tag=''${2:-''${ATTUNE_IMAGE_TAG:-latest}}
    for arch in amd64 arm64; do
      case $arch in
        amd64) specs=(${published "amd64"}) ;;
        arm64) specs=(${published "arm64"}) ;;
      esac
      for spec in "''${specs[@]}"; do
        name=''${spec%%:*}; rest=''${spec#*:}; imagetag=''${rest%%=*}; src=''${rest#*=}
        # The service images are streams, the packs image a docker archive file.
        if ! docker image inspect "attune/$name:$imagetag" >/dev/null 2>&1; then
          if [ -f "$src" ] && [ ! -x "$src" ]; then docker load -i "$src" >/dev/null; else "$src" | docker load >/dev/null; fi
        fi
        docker tag "attune/$name:$imagetag" "attune/$name:$tag-$arch"
      done
    done
    # docker/publish checks the packs images with this system's packs-assemble.
    PACKS_ASSEMBLE=${packs-assemble}/bin/packs-assemble exec ${docker}/publish "$1" "$tag"
  '';
  other =
    command:
    writeShellScript "attune-${command}" ''
      set -euo pipefail
      ${userFiles}
      exec ${docker}/stack ${command} "$@"
    '';
  app = program: {
    type = "app";
    program = "${program}";
  };
in
{
  up = app (up hostArch);
  up-amd64 = app (up "amd64");
  up-arm64 = app (up "arm64");
  down = app (other "down");
  logs = app (other "logs");
  publish = app publish;
}
