# Layered images of one architecture, streamed from the build platform with
# `architecture` set. They hold binaries and configuration, never packs. All
# four share one tag derived from their contents; services run as uid 1000.
# The layout is docker/IMAGE-LAYOUT.md's, shared with docker/build-images: the
# binaries are also at /usr/local/bin (the compose healthcheck calls
# /usr/local/bin/attune-api), packs-init's tree at /opt/attune/pack-binaries.
{
  dockerTools,
  target,
  services,
  pack-binaries,
}:
let
  tag = builtins.substring 0 16 (
    builtins.hashString "sha256" "${services}${pack-binaries}${target.docker}"
  );
  # Mount points owned by uid 1000 (a new named volume takes their ownership).
  skeleton = ''
    mkdir -p opt/attune/packs opt/attune/packs.dev opt/attune/data opt/attune/logs opt/attune/agent tmp etc usr/local/bin
    for bin in ${services}/bin/*; do
      ln -s "$bin" usr/local/bin/
    done
    chown -R 1000:1000 opt/attune
    chmod 1777 tmp
    echo 'attune:x:1000:1000::/opt/attune:/sbin/nologin' > etc/passwd
    echo 'attune:x:1000:' > etc/group
  '';
  image =
    name:
    {
      entrypoint,
      cmd ? [ ],
      contents ? [ ],
      extraCommands ? "",
    }:
    dockerTools.streamLayeredImage {
      name = "attune/${name}";
      inherit tag contents;
      architecture = target.docker;
      created = "1970-01-01T00:00:01Z";
      fakeRootCommands = skeleton + extraCommands;
      enableFakechroot = false;
      config = {
        User = "1000:1000";
        WorkingDir = "/opt/attune";
        Entrypoint = entrypoint;
        Cmd = cmd;
        Env = [ "PATH=/usr/local/bin:/bin:/usr/bin" ];
        Labels."io.attune.arch" = target.docker;
      };
      passthru = {
        inherit target;
        binaries = contents;
      };
    };
  rt = target.runtime;
in
{
  inherit tag;
  api = image "api" {
    entrypoint = [ "${services}/bin/attune-api" ];
    contents = [ services ];
  };
  sensor = image "sensor" {
    entrypoint = [ "${services}/bin/attune-sensor" ];
    contents = [ services ];
  };
  worker = image "worker" {
    entrypoint = [ "${services}/bin/attune-worker" ];
    # What the shell and python runners need.
    contents = [
      services
      rt.bashInteractive
      rt.coreutils
      rt.python3
    ];
    extraCommands = ''
      mkdir -p bin
      ln -sf ${rt.bashInteractive}/bin/bash bin/bash
      ln -sf ${rt.bashInteractive}/bin/bash bin/sh
    '';
  };
  packs-init = image "packs-init" {
    entrypoint = [ "${services}/bin/packs-assemble" ];
    cmd = [
      "assemble"
      "--packs"
      "/source/packs"
      "--binaries"
      "/opt/attune/pack-binaries"
      "--arch"
      target.docker
      "--out"
      "/opt/attune/packs"
    ];
    contents = [
      services
      pack-binaries
    ];
    extraCommands = ''
      ln -s ${pack-binaries} opt/attune/pack-binaries
    '';
  };
}
