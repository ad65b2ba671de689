# The stub package set of one system.
{ system }:
let
  # A derivation that is never built, carrying the arguments it was made with.
  record =
    kind: name: args:
    (builtins.derivation {
      inherit name system;
      # The scalar arguments make the derivation's identity: two calls with
      # different targets or flags are different derivations.
      fingerprint = builtins.toJSON (
        if builtins.isAttrs args then
          builtins.mapAttrs (
            _: v: if builtins.isString v || builtins.isInt v || builtins.isBool v then v else null
          ) args
        else
          null
      );
      builder = "/bin/sh";
      args = [
        "-c"
        "echo this is a stub; exit 1"
      ];
    })
    // {
      stub = kind;
      recorded = args;
    }
    // (args.passthru or { });
  pkg = name: record "package" name { } // { pname = name; };
  cc =
    prefix:
    record "cc" "${prefix}cc" { }
    // {
      targetPrefix = prefix;
      bintools = record "bintools" "${prefix}bintools" { };
    };
  self = {
    bashInteractive = pkg "bash";
    coreutils = pkg "coreutils";
    python3 = pkg "python3";
    inherit system;
    lib = import ./lib.nix;
    stubRecord = record;
    # Like nixpkgs' callPackage (lib.makeOverridable): a returned attribute set
    # also gets `override` and `overrideDerivation`, which is why apps must not
    # come from callPackage (they would not be apps).
    callPackage =
      f: overrides:
      let
        fn = if builtins.isFunction f then f else import f;
        args = builtins.intersectAttrs (builtins.functionArgs fn) self // overrides;
        result = fn args;
      in
      if builtins.isAttrs result then
        result
        // {
          override = more: self.callPackage f (overrides // more);
          overrideDerivation = _: result;
        }
      else
        result;
    stdenv = {
      cc = cc "";
      hostPlatform.system = system;
      isLinux = builtins.match ".*-linux" system != null;
      isDarwin = builtins.match ".*-darwin" system != null;
    };
    zig = pkg "zig";
    cargo-zigbuild = pkg "cargo-zigbuild";
    runCommand = name: env: script: record "runCommand" name (env // { inherit script; });
    writeShellScript = name: text: record "writeShellScript" name { inherit text; };
    mkShell = args: record "mkShell" "shell" args;
    dockerTools.streamLayeredImage =
      args:
      record "streamLayeredImage" "stream-${baseNameOf args.name}" args
      // {
        imageName = args.name;
        imageTag = args.tag;
      };
    jq = pkg "jq";
    procps = pkg "procps";
    gnutar = pkg "gnutar";
    qemu = pkg "qemu";
    qemu-user = pkg "qemu-user";
    cargo-nextest = pkg "cargo-nextest";
    cargo-deny = pkg "cargo-deny";
    skopeo = pkg "skopeo";
    docker-compose = pkg "docker-compose";
    shellcheck = pkg "shellcheck";
    nixfmt = pkg "nixfmt";
    nixfmt-tree = pkg "nixfmt-tree";
  };
in
self
