# The packs image of one architecture, the flake's twin of
# docker/build-packs-image: the packs of the assembled volume, one store path
# (so one layer) per pack, and packs-assemble; its entrypoint publishes them into
# a volume and verifies it (`assemble --verify`, cmd `--out /opt/attune/packs`).
# Its tag is derived from the volume derivation, which the packs' content decides.
{
  runCommand,
  dockerTools,
  target,
  volume,
  services,
  packNames,
}:
let
  # `$out/<pack>`: packs-assemble takes each as a --packs directory holding one pack
  # (-L: the volume's directories are links into its object store).
  pack =
    name:
    runCommand "attune-pack-${name}-${target.docker}" { } ''
      mkdir -p $out
      cp -rL ${volume}/volume/..data/${name} $out/${name}
    '';
  packs = map pack packNames;
in
dockerTools.streamLayeredImage {
  name = "attune/packs";
  tag = builtins.substring 0 16 (builtins.hashString "sha256" "${volume}");
  architecture = target.docker;
  created = "1970-01-01T00:00:01Z";
  contents = [ services ] ++ packs;
  fakeRootCommands = ''
    mkdir -p opt/attune/packs usr/local/bin tmp etc
    ln -s ${services}/bin/packs-assemble usr/local/bin/packs-assemble
    chown -R 1000:1000 opt/attune
    chmod 1777 tmp
    echo 'attune:x:1000:1000::/opt/attune:/sbin/nologin' > etc/passwd
    echo 'attune:x:1000:' > etc/group
  '';
  enableFakechroot = false;
  config = {
    User = "1000:1000";
    WorkingDir = "/opt/attune";
    Entrypoint = [
      "${services}/bin/packs-assemble"
      "assemble"
    ]
    ++ builtins.concatMap (p: [
      "--packs"
      "${p}"
    ]) packs
    ++ [
      "--arch"
      target.docker
      "--verify"
    ];
    Cmd = [
      "--out"
      "/opt/attune/packs"
    ];
    Env = [ "PATH=/usr/local/bin:/bin" ];
    Labels."io.attune.arch" = target.docker;
  };
  passthru = {
    inherit target packs;
  };
}
