# Layered images of one architecture, streamed from the build platform with
# `architecture` set. They hold binaries and configuration, never packs. All
# share one tag derived from their contents; services run as uid 1000.
# The layout is crates/attune-image/services.json's, the one source that
# docker/build-images (packs-assemble export-rootfs --service NAME) writes too
# and docker/IMAGE-LAYOUT.md documents: passwd and group, /tmp, the mount points
# (owned by 1000, every other entry by 0), User, WorkingDir, Env, Entrypoint,
# Cmd and the labels. The binaries stay in /nix/store, each linked at
# /usr/local/bin (where the entrypoints and the compose healthcheck find them),
# packs-init's tree at /opt/attune/pack-binaries.
{
  lib,
  dockerTools,
  target,
  services,
  pack-binaries,
}:
let
  layout = builtins.fromJSON (builtins.readFile ../crates/attune-image/services.json);
  inherit (layout) common;
  tag = builtins.substring 0 16 (
    builtins.hashString "sha256" "${services}${pack-binaries}${target.docker}"
  );
  # `{arch}` in the layout is the image's architecture.
  subst = map (s: if s == "{arch}" then target.docker else s);
  rel = lib.removePrefix "/";
  owner = lib.concatMapStringsSep ":" toString common.mount_owner;
  # Mount points owned by uid 1000 (a new named volume takes their ownership).
  skeleton =
    mounts:
    let
      dirs = lib.concatMapStringsSep " " (m: lib.escapeShellArg (rel m)) mounts;
    in
    ''
      mkdir -p ${dirs} ${rel common.tmp} etc ${rel common.bin_dir}
      for bin in ${services}/bin/*; do
        ln -s "$bin" ${rel common.bin_dir}/
      done
      chown ${owner} ${dirs}
      chmod 1777 ${rel common.tmp}
      printf '%s' ${lib.escapeShellArg common.passwd} > etc/passwd
      printf '%s' ${lib.escapeShellArg common.group} > etc/group
    '';
  # `roles`: the layouts this image serves (the Nix worker is also the Python
  # runtime: its mount points are theirs too).
  image =
    name:
    {
      roles ? [ name ],
      contents ? [ ],
      extraCommands ? "",
    }:
    let
      svc = layout.services.${name};
      mounts = builtins.foldl' (acc: m: if builtins.elem m acc then acc else acc ++ [ m ]) [ ] (
        common.mounts ++ builtins.concatMap (r: layout.services.${r}.mounts or [ ]) roles
      );
    in
    dockerTools.streamLayeredImage {
      name = "attune/${name}";
      inherit tag contents;
      architecture = target.docker;
      created = "1970-01-01T00:00:01Z";
      fakeRootCommands = skeleton mounts + extraCommands;
      enableFakechroot = false;
      config = {
        User = common.user;
        WorkingDir = common.working_dir;
        Entrypoint = subst svc.entrypoint;
        Cmd = subst (svc.cmd or [ ]);
        Env = common.env;
        Labels = {
          ${common.label_arch} = target.docker;
          ${common.label_title} = "attune ${name}";
        };
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
  # The images every architecture has, for the apps and the checks.
  names = [
    "packs-init"
    "api"
    "worker"
    "sensor"
    "agent"
  ];
  api = image "api" { contents = [ services ]; };
  sensor = image "sensor" { contents = [ services ]; };
  # The static services only; run, it fills the agent volume.
  agent = image "agent" { contents = [ services ]; };
  worker = image "worker" {
    roles = [
      "worker"
      "runtime-python"
    ];
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
  # The flake builds no pack dependencies: its --deps tree is empty.
  packs-init = image "packs-init" {
    contents = [
      services
      pack-binaries
    ];
    extraCommands = ''
      ln -s ${pack-binaries} opt/attune/pack-binaries
      mkdir -p opt/attune/pack-deps
    '';
  };
}
