//! The validation facts of pack YAML files, kept in the volume root between
//! runs, so that a run over unchanged YAML does not parse it again.
//!
//! The facts are an [`attune_pack::LoadCache`] of summaries: what loading
//! each YAML file found (its diagnostics, and of a component only what the
//! checks across files and packs consult: refs, runner type, entry point;
//! see [`attune_pack::Brief`]), keyed by its path in the pack, its SHA-256
//! and the pack's ref. Give [`attune_pack::load_pack_summary_cached`] the
//! hashes this run already trusts
//! (the hash cache's, by stamp), save [`bytes`] after the packs are loaded.
//! Writing the file is the publisher's, through its filesystem layer: nothing
//! here writes.

use std::path::Path;

use attune_pack::LoadCache;

pub use crate::volume::FACTS_NAME;

/// The facts saved in `volume`; empty when the file is missing, unreadable,
/// damaged, not a regular file, or written by another build.
pub fn load(volume: &Path) -> LoadCache {
    let path = volume.join(FACTS_NAME);
    match crate::bookkeeping::read_bookkeeping(&path, crate::bookkeeping::BOOKKEEPING_LIMIT) {
        Some(bytes) => LoadCache::from_bytes(&bytes),
        None => LoadCache::new(),
    }
}

/// The bytes to save as [`FACTS_NAME`]: the entries this run looked up or added.
pub fn bytes(cache: &LoadCache) -> Vec<u8> {
    cache.to_bytes()
}

/// Whether the saved facts would change, for a cache that held `loaded`
/// entries when it was read: an entry was added, or one went unused (its file
/// is gone or changed). A file parsed without a trusted hash adds none.
pub fn changed(cache: &LoadCache, loaded: usize) -> bool {
    cache.len() != loaded || cache.reused() != cache.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_damaged_file_is_an_empty_cache() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(load(tmp.path()).is_empty());
        assert!(load(&tmp.path().join("no such volume")).is_empty());
        let mut written = tempfile::NamedTempFile::new_in(tmp.path()).unwrap();
        std::io::Write::write_all(&mut written, b"attune-pack load cache 2\ntruncated").unwrap();
        written.persist(tmp.path().join(FACTS_NAME)).unwrap();
        assert!(load(tmp.path()).is_empty());
    }

    #[test]
    fn saved_facts_load_again() {
        use sha2::{Digest, Sha256};
        let tmp = tempfile::tempdir().unwrap();
        let pack = tempfile::Builder::new()
            .prefix("demo")
            .rand_bytes(0)
            .tempdir_in(tmp.path())
            .unwrap();
        let pack = pack.path();
        let yaml = b"ref: demo\nlabel: Demo\nversion: 1.0.0\n";
        let mut f = tempfile::NamedTempFile::new_in(pack).unwrap();
        std::io::Write::write_all(&mut f, yaml).unwrap();
        f.persist(pack.join("pack.yaml")).unwrap();
        let digest: [u8; 32] = Sha256::digest(yaml).into();
        let mut cache = LoadCache::new();
        let cold = attune_pack::load_pack_summary_cached(pack, &|_| Some(digest), &mut cache);
        let mut saved = tempfile::NamedTempFile::new_in(tmp.path()).unwrap();
        std::io::Write::write_all(&mut saved, &bytes(&cache)).unwrap();
        saved.persist(tmp.path().join(FACTS_NAME)).unwrap();

        let mut warm = load(tmp.path());
        assert_eq!(warm.len(), 1);
        let again = attune_pack::load_pack_summary_cached(pack, &|_| Some(digest), &mut warm);
        assert_eq!(again, cold);
        assert_eq!((warm.reused(), warm.parsed()), (1, 0));
    }
}
