//! `attune-worker install-agent DIR`: the static services, copied from the
//! agent image into a volume that runtime images run them from (upstream's
//! `init-agent`). A static binary runs in any image of its architecture, so
//! the runtime is whatever image the user picks; this puts the binaries there.
//!
//! Each file is written beside its final name and renamed over it, so a
//! service still running the old binary from the volume keeps it (no
//! `Text file busy`) and a reader never sees half a binary.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The binaries an agent volume holds, found beside the running one.
pub const AGENT_BINARIES: &[&str] = &["attune-worker", "attune-sensor"];

/// Usage of `install-agent`.
pub const USAGE: &str = "usage: attune-worker install-agent DIR
Copies the static attune-worker and attune-sensor found beside this binary into
DIR (the Docker stack's agent-init fills the agent volume this way), each
written beside its name and renamed over it. Exit 0 done, 2 usage, 3 I/O.";

/// Copies every [`AGENT_BINARIES`] file of `from` into `to`, mode 0555;
/// returns what it wrote, with sizes.
pub fn install(from: &Path, to: &Path) -> Result<Vec<(PathBuf, u64)>, String> {
    let mut done = vec![];
    for name in AGENT_BINARIES {
        let src = from.join(name);
        let bytes = fs::read(&src).map_err(|e| format!("{}: {e}", src.display()))?;
        let dst = to.join(name);
        let tmp = to.join(format!(".{name}.{}.tmp", std::process::id()));
        let write = || -> std::io::Result<()> {
            // O_NOFOLLOW: a planted link at the temporary name is not written through.
            let _ = fs::remove_file(&tmp);
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o755)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            f.set_permissions(fs::Permissions::from_mode(0o555))?;
            f.sync_all()?;
            fs::rename(&tmp, &dst)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            format!("cannot write {}: {e}", dst.display())
        })?;
        done.push((dst, bytes.len() as u64));
    }
    Ok(done)
}

/// `install-agent` with its arguments (after the subcommand): the exit code.
pub fn main(args: &[std::ffi::OsString]) -> u8 {
    let [dir] = args else {
        eprintln!("{USAGE}");
        return crate::exit::USAGE;
    };
    if dir == "-h" || dir == "--help" {
        println!("{USAGE}");
        return crate::exit::OK;
    }
    let from = match std::env::current_exe() {
        Ok(p) => p.parent().map(Path::to_path_buf).unwrap_or_default(),
        Err(e) => {
            eprintln!("attune-worker install-agent: cannot find this binary: {e}");
            return crate::exit::ENVIRONMENT;
        }
    };
    match install(&from, Path::new(dir)) {
        Ok(done) => {
            for (p, size) in done {
                println!("installed {} ({size} bytes)", p.display());
            }
            crate::exit::OK
        }
        Err(e) => {
            eprintln!("attune-worker install-agent: {e}");
            crate::exit::ENVIRONMENT
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binaries_replace_old_ones_by_rename_and_a_planted_link_is_not_followed() {
        let t = tempfile::tempdir().unwrap();
        let (from, to) = (t.path().join("from"), t.path().join("to"));
        fs::create_dir_all(&from).unwrap();
        fs::create_dir_all(&to).unwrap();
        for n in AGENT_BINARIES {
            fs::write(from.join(n), format!("new {n}")).unwrap();
        }
        fs::write(to.join("attune-worker"), "old").unwrap();
        let old = fs::File::open(to.join("attune-worker")).unwrap();
        let victim = t.path().join("victim");
        fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(
            &victim,
            to.join(format!(".attune-sensor.{}.tmp", std::process::id())),
        )
        .unwrap();
        let done = install(&from, &to).unwrap();
        assert_eq!(done.len(), 2);
        assert_eq!(
            fs::read_to_string(to.join("attune-worker")).unwrap(),
            "new attune-worker"
        );
        assert_eq!(
            fs::metadata(to.join("attune-sensor"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o555
        );
        // The old file, still open (a running service), is untouched.
        drop(old);
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
    }

    #[test]
    fn usage_errors_exit_2() {
        assert_eq!(main(&[]), crate::exit::USAGE);
    }
}
