# The assembled packs volume of one architecture, made by packs-assemble in a
# derivation: proves the volume builds from ./packs deterministically (its
# manifest root hash is in the output) and that verify accepts it.
{
  runCommand,
  target,
  packs,
  pack-binaries,
  packs-assemble,
}:
runCommand "packs-volume-${target.docker}"
  {
    nativeBuildInputs = [ packs-assemble ];
    SOURCE_DATE_EPOCH = "1";
    passthru = {
      inherit pack-binaries;
      arch = target.docker;
    };
  }
  ''
    # A plain copy: store files may be hard-linked by store optimisation.
    cp -r ${packs} packs
    chmod -R u+w packs
    mkdir -p $out
    packs-assemble -q assemble --packs packs --binaries ${pack-binaries} --arch ${target.docker} \
      --out $out/volume --no-sync --json > $out/assemble.json
    packs-assemble verify --arch ${target.docker} $out/volume
    rm -f $out/volume/.attune-lock $out/volume/.attune-assemble-cache
    sed -n 's/.*"root_hash": "\(sha256:[0-9a-f]*\)".*/\1/p' $out/assemble.json | head -n1 > $out/root-hash
  ''
