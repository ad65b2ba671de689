//! The image subcommands (`export`, `export-rootfs`, `check-image`): from
//! parsed arguments, through `attune_image`, to printed result and exit code.

use std::path::Path;
use std::process::ExitCode;

use attune_image::{Dest, ExportOptions, ImageFormat, RootfsOptions};
use attune_pack::{Arch, Diagnostics};
use attune_volume::error::{Error, exit};
use serde::Serialize;

use crate::cli::{CheckImageArgs, ExportArgs, ExportRootfsArgs};
use crate::output::{Output, counts, plural};

/// Refuses `--json` with `--out -`, where the archive goes to stdout, after
/// the format is checked against `--out`.
fn dest(format: ImageFormat, out: &Path, json: bool) -> Result<(), Error> {
    if Dest::new(format, out)?.is_stdout() && json {
        return Err(Error::Usage(
            "--json prints the result on stdout, where --out - writes the archive: give --out FILE"
                .to_string(),
        ));
    }
    Ok(())
}

/// Prints what an image command found and the `result` (which holds
/// `diagnostics`), unless the archive went to stdout; the exit code, or the
/// error when the inputs were refused (`ok` false) and nothing was written.
fn finish<T: Serialize>(
    out: Output,
    to: &Path,
    ok: bool,
    diagnostics: &Diagnostics,
    result: &T,
    reference: Option<&str>,
) -> Result<ExitCode, Error> {
    out.diagnostics(diagnostics);
    let to_stdout = to == Path::new("-");
    if !ok {
        if !to_stdout {
            out.result(result, || {
                format!("nothing was written to {}", to.display())
            });
        }
        return Err(Error::Invalid {
            count: diagnostics.errors().count(),
            consequence: "no image was written",
        });
    }
    if !to_stdout {
        out.result(result, || reference.unwrap_or_default().to_string());
    }
    Ok(ExitCode::from(exit::OK))
}

/// `export`.
pub fn export(args: &ExportArgs, out: Output) -> Result<ExitCode, Error> {
    dest(args.format, &args.out, out.json)?;
    let r = attune_image::export(&ExportOptions {
        volume: args.volume.clone(),
        assembler: args.assembler.clone(),
        arch: args.arch,
        format: args.format,
        name: args.name.clone(),
        tag: args.tag.clone(),
        out: args.out.clone(),
    })?;
    let image = &r.image;
    if image.ok {
        tracing::info!(
            "packs image {} ({}): {} pack {} ({}), config {}, volume {}; written to {}",
            image.image.as_deref().unwrap_or_default(),
            image.arch,
            r.packs.len(),
            plural(r.packs.len(), "layer"),
            r.packs.join(", "),
            image.config_digest.as_deref().unwrap_or_default(),
            r.root_hash.as_deref().unwrap_or_default(),
            args.out.display()
        );
    }
    finish(
        out,
        &args.out,
        image.ok,
        &image.diagnostics,
        &r,
        image.image.as_deref(),
    )
}

/// `export-rootfs`.
pub fn export_rootfs(args: &ExportRootfsArgs, out: Output) -> Result<ExitCode, Error> {
    dest(args.format, &args.out, out.json)?;
    let mut opts = match &args.service {
        Some(service) => RootfsOptions::service(
            service,
            args.arch,
            args.rootfs.clone(),
            args.format,
            args.out.clone(),
        )?,
        None => RootfsOptions {
            rootfs: args.rootfs.clone(),
            arch: args.arch,
            name: String::new(),
            tag: None,
            entrypoint: args.entrypoint.clone().map(|e| e.0).unwrap_or_default(),
            cmd: args.cmd.clone().map(|c| c.0),
            labels: vec![],
            owners: vec![],
            dynamic_ok: vec![],
            format: args.format,
            out: args.out.clone(),
            service: None,
        },
    };
    if let Some(name) = &args.name {
        opts.name = name.clone();
    }
    opts.tag = args.tag.clone();
    opts.labels.extend(args.labels.iter().cloned());
    opts.owners.extend(args.owners.iter().cloned());
    opts.dynamic_ok.extend(args.dynamic_ok.iter().cloned());
    let r = attune_image::export_rootfs(&opts)?;
    let image = &r.image;
    if image.ok {
        tracing::info!(
            "image {} ({}): {} entries of {}, config {}; written to {}",
            image.image.as_deref().unwrap_or_default(),
            image.arch,
            r.entries,
            args.rootfs.display(),
            image.config_digest.as_deref().unwrap_or_default(),
            args.out.display()
        );
    }
    finish(
        out,
        &args.out,
        image.ok,
        &image.diagnostics,
        &r,
        image.image.as_deref(),
    )
}

/// `check-image`.
pub fn check_image(args: &CheckImageArgs, out: Output) -> Result<ExitCode, Error> {
    let r = attune_image::check_image(&args.image, args.arch)?;
    out.diagnostics(&r.diagnostics);
    out.result(&r, || {
        let verdict = if r.ok { "ok" } else { "FAILED" };
        // The base and the packs, once the layers could be read.
        let layers: Vec<&str> = ["base"]
            .into_iter()
            .filter(|_| !r.layers.is_empty())
            .chain(r.packs.iter().map(String::as_str))
            .collect();
        format!(
            "{}: {verdict}: packs image for {}, {} layers read ({}), config {}; {}",
            r.image,
            r.arch.map_or("?", Arch::docker_name),
            r.layers.len(),
            layers.join(", "),
            r.config_digest.as_deref().unwrap_or("missing"),
            counts(&r.diagnostics)
        )
    });
    match r.diagnostics.errors().count() {
        0 => Ok(ExitCode::from(exit::OK)),
        count => Err(Error::Invalid {
            count,
            consequence: "the image does not have the packs image's layout (docker/IMAGE-LAYOUT.md)",
        }),
    }
}
