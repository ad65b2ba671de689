# Stub crane for the wiring test: mkLib / overrideToolchain and the builders the
# flake calls, each recording its arguments and the toolchain in force.
{
  description = "stub crane (wiring test)";
  outputs =
    _:
    {
      mkLib =
        pkgs:
        let
          craneLib =
            toolchain:
            let
              builder =
                kind: args:
                pkgs.stubRecord "crane.${kind}" "${args.pname or kind}-${kind}" (args // { inherit toolchain; });
            in
            {
              overrideToolchain = f: craneLib (if builtins.isFunction f then f pkgs else f);
              cleanCargoSource = path: { stubCleanCargoSource = path; };
              buildDepsOnly = builder "buildDepsOnly";
              buildPackage = builder "buildPackage";
              cargoClippy = builder "cargoClippy";
              cargoFmt = builder "cargoFmt";
              cargoNextest = builder "cargoNextest";
              cargoDeny = builder "cargoDeny";
            };
        in
        craneLib null;
    };
}
