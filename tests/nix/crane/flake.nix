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
              # crane's: .rs and .toml files, Cargo.lock, .cargo/config, every directory.
              filterCargoSources =
                path: type:
                let
                  base = baseNameOf (toString path);
                in
                type == "directory"
                || builtins.match ".*\\.(rs|toml)" base != null
                || base == "Cargo.lock"
                || (baseNameOf (dirOf (toString path)) == ".cargo" && base == "config");
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
