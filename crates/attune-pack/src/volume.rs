//! What readers of a packs volume rely on: packs are published in generations,
//! and the `..data` link names the current one (packs-assemble writes it).

use std::path::Path;

/// The link in a packs volume whose target is the current generation; it is
/// replaced by rename(2), so a reader sees one whole generation.
pub const DATA_LINK: &str = "..data";

/// The current generation of the packs volume at `dir` (the `..data` target),
/// or `None` when `dir` is not a published volume (for example a plain
/// directory of packs). A change of it means new packs were published.
pub fn volume_generation(dir: &Path) -> Option<String> {
    std::fs::read_link(dir.join(DATA_LINK))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_the_data_link_target() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(volume_generation(tmp.path()), None);
        std::os::unix::fs::symlink("..0123", tmp.path().join(DATA_LINK)).unwrap();
        assert_eq!(volume_generation(tmp.path()).as_deref(), Some("..0123"));
    }
}
