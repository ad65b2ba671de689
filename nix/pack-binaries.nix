# The pack binaries tree of one architecture: paths mirror the packs
# (core/sensors/attune-core-timer-sensor) so packs-assemble overlays them.
{
  runCommand,
  target,
  timer-sensor,
}:
runCommand "pack-binaries-${target.arch}"
  {
    # Static binaries: nothing in the store may be referenced.
    allowedReferences = [ ];
    passthru = {
      sensor = timer-sensor;
      inherit target;
    };
  }
  ''
    mkdir -p $out/core/sensors
    cp ${timer-sensor}/bin/attune-core-timer-sensor $out/core/sensors/
  ''
