# The packs image of one architecture, written by the one packs-image writer,
# `packs-assemble export` (docker/build-packs-image runs the same): the packs of
# the assembled volume, one layer each, and the static packs-assemble of that
# architecture, whose entrypoint publishes them into a volume and verifies it.
# The layout is docker/IMAGE-LAYOUT.md's, checked by `packs-assemble
# check-image` on the result. Its tag is derived from the volume and the
# services, which decide its content. A docker archive file, not a stream.
{
  runCommand,
  target,
  volume,
  services,
  packs-assemble,
}:
let
  tag = builtins.substring 0 16 (builtins.hashString "sha256" "${volume}${services}");
in
runCommand "attune-packs-image-${target.docker}.tar"
  {
    nativeBuildInputs = [ packs-assemble ];
    SOURCE_DATE_EPOCH = "1";
    passthru = {
      inherit target;
      imageName = "attune/packs";
      imageTag = tag;
    };
  }
  ''
    packs-assemble -q export --volume ${volume}/volume \
      --assembler ${services}/bin/packs-assemble --arch ${target.docker} \
      --name attune/packs --tag ${tag} --format docker-archive --out $out
    packs-assemble -q check-image --arch ${target.docker} $out
  ''
