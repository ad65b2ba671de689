# `nix run .#up`, `.#down`, `.#logs`: thin wrappers around docker/stack, which
# loads only the images whose tag is missing and drives docker compose (v2) or
# docker-compose (v1). ATTUNE_ARCH picks the images (default: this system's).
{
  writeShellScript,
  lib,
  stack,
  defaultArch,
  images,
}:
let
  specs =
    arch:
    lib.concatMapStringsSep " " (
      name: lib.escapeShellArg "attune/${name}:${images.${arch}.tag}=${images.${arch}.${name}}"
    ) [ "packs-init" "api" "worker" "sensor" ];
  wrapper =
    command:
    writeShellScript "attune-${command}" ''
      set -euo pipefail
      arch=''${ATTUNE_ARCH:-${defaultArch}}
      case $arch in
        amd64|x86_64) arch=amd64; tag=${images.amd64.tag}; images=(${specs "amd64"}) ;;
        arm64|aarch64) arch=arm64; tag=${images.arm64.tag}; images=(${specs "arm64"}) ;;
        *) echo "ATTUNE_ARCH=$arch: expected amd64 or arm64" >&2; exit 2 ;;
      esac
      # Run from a checkout: packs, packs.dev and docker/.env are the user's.
      export ATTUNE_IMAGE_TAG=$tag
      export ATTUNE_PACKS_SOURCE=''${ATTUNE_PACKS_SOURCE:-$PWD/packs}
      export ATTUNE_PACKS_DEV=''${ATTUNE_PACKS_DEV:-$PWD/packs.dev}
      export ATTUNE_ENV_FILE=''${ATTUNE_ENV_FILE:-$PWD/docker/.env}
      ${
        if command == "up" then
          ''exec ${stack}/stack up "''${images[@]}" "$@"''
        else
          ''exec ${stack}/stack ${command} "$@"''
      }
    '';
  app = command: {
    type = "app";
    program = "${wrapper command}";
  };
in
{
  up = app "up";
  down = app "down";
  logs = app "logs";
}
