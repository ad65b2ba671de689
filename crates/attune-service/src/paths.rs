//! Paths given to a service (flags and environment variables), made absolute
//! once, at startup, against the current directory.
//!
//! A relative path is only meaningful where it was given: the worker runs each
//! action in its pack's directory, so a relative packs directory resolved from
//! there named nothing. Every service therefore makes its paths absolute before
//! it does anything else, with this one rule:
//!
//! - an absolute path is kept as given (the current directory is not read);
//! - a relative one is joined to [`std::env::current_dir`], lexically: nothing
//!   is canonicalised, so a symlink in the path (the packs volume's
//!   `<pack> -> ..data/<pack>`) stays in it and is followed again at each access;
//! - `.` components and repeated `/` are dropped; a `..` at the start of a
//!   relative path is taken off the current directory (which is physical, so
//!   that is exact); any other `..` is kept, since it may follow a symlink.

use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};

/// Why a path given to a service cannot be used.
#[derive(Debug)]
pub enum PathError {
    /// The path is empty.
    Empty {
        /// The flag and variable it came from, e.g. `--db (ATTUNE_DB)`.
        name: String,
    },
    /// The path is relative and the current directory cannot be read.
    NoCurrentDir {
        /// The flag and variable it came from.
        name: String,
        /// The path as given.
        path: PathBuf,
        /// Why `getcwd` failed.
        error: std::io::Error,
    },
    /// The path, made absolute, is not UTF-8 where text is needed.
    NotUtf8 {
        /// The flag and variable it came from.
        name: String,
        /// The absolute path.
        path: PathBuf,
    },
}

impl PathError {
    /// The exit code for it: 2 (usage) for an empty path, 3 (environment) otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            PathError::Empty { .. } => crate::exit::USAGE,
            PathError::NoCurrentDir { .. } | PathError::NotUtf8 { .. } => crate::exit::ENVIRONMENT,
        }
    }
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathError::Empty { name } => write!(f, "{name} is empty; give a path"),
            PathError::NoCurrentDir { name, path, error } => write!(
                f,
                "{name} {} is relative, but the current directory cannot be read to make it absolute ({error}); start the service in an existing directory, or give an absolute path",
                path.display()
            ),
            PathError::NotUtf8 { name, path } => write!(
                f,
                "{name}: its absolute path {} is not UTF-8; give an absolute UTF-8 path",
                path.display()
            ),
        }
    }
}

impl std::error::Error for PathError {}

/// `path` made absolute against `base` by the rule of this module, without
/// looking at the file system; `base` must be absolute and physical (as
/// [`std::env::current_dir`] returns it) for a leading `..` to be exact.
pub fn absolute_from(base: &Path, path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    let mut leading = !path.is_absolute();
    if leading {
        out.extend(base.components());
    }
    for c in path.components() {
        match c {
            Component::ParentDir if leading => {
                // The parent of `/` is `/`.
                if out.parent().is_some() {
                    out.pop();
                }
            }
            Component::CurDir => {}
            other => {
                leading = false;
                out.push(other);
            }
        }
    }
    out
}

/// `path` (from `name`, e.g. `--packs-dir (ATTUNE_PACKS_DIR)`) made absolute
/// against the current directory, which is read only when `path` is relative.
pub fn absolute(name: &str, path: &Path) -> Result<PathBuf, PathError> {
    if path.as_os_str().is_empty() {
        return Err(PathError::Empty {
            name: name.to_string(),
        });
    }
    if path.is_absolute() {
        return Ok(absolute_from(Path::new("/"), path));
    }
    let cwd = std::env::current_dir().map_err(|error| PathError::NoCurrentDir {
        name: name.to_string(),
        path: path.to_path_buf(),
        error,
    })?;
    Ok(absolute_from(&cwd, path))
}

/// [`absolute`] in place.
pub fn make_absolute(name: &str, path: &mut PathBuf) -> Result<(), PathError> {
    *path = absolute(name, path)?;
    Ok(())
}

/// [`absolute`] of a path held as text (an SQLite database file, say).
pub fn make_absolute_str(name: &str, path: &mut String) -> Result<(), PathError> {
    let abs = absolute(name, Path::new(OsStr::new(path.as_str())))?;
    *path = abs
        .into_os_string()
        .into_string()
        .map_err(|p| PathError::NotUtf8 {
            name: name.to_string(),
            path: p.into(),
        })?;
    Ok(())
}

/// `--<flag> (<VAR>)`: how a path's origin is named in errors.
pub fn flag_name(flag: &str, var: &str) -> String {
    format!("--{flag} ({var})")
}

/// Makes the packs directory and the packs.dev directory absolute: every
/// service takes both (`--packs-dir`, `--packs-dev-dir`).
pub fn make_packs_dirs_absolute(
    packs_dir: &mut PathBuf,
    packs_dev_dir: &mut PathBuf,
) -> Result<(), PathError> {
    make_absolute(&flag_name("packs-dir", crate::env::PACKS_DIR), packs_dir)?;
    make_absolute(
        &flag_name("packs-dev-dir", crate::env::PACKS_DEV_DIR),
        packs_dev_dir,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_joined_to_the_base_lexically() {
        let base = Path::new("/srv/run");
        for (given, want) in [
            ("vol", "/srv/run/vol"),
            ("./vol/", "/srv/run/vol"),
            ("vol/./demo//actions", "/srv/run/vol/demo/actions"),
            ("../vol", "/srv/vol"),
            ("../../../../vol", "/vol"),
            (".", "/srv/run"),
            // After a component that may be a symlink, `..` is the kernel's to resolve.
            ("vol/../x", "/srv/run/vol/../x"),
            ("/opt/attune/packs", "/opt/attune/packs"),
            ("/opt/./attune//packs/", "/opt/attune/packs"),
            ("/opt/link/../packs", "/opt/link/../packs"),
        ] {
            assert_eq!(
                absolute_from(base, Path::new(given)),
                Path::new(want),
                "{given}"
            );
        }
    }

    /// Nothing is canonicalised: a symlink in the path stays in it.
    #[test]
    fn symlinks_are_kept() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("real")).unwrap();
        std::os::unix::fs::symlink("real", tmp.path().join("link")).unwrap();
        let abs = absolute_from(tmp.path(), Path::new("link"));
        assert_eq!(abs, tmp.path().join("link"));
        assert!(abs.is_dir());
    }

    #[test]
    fn absolute_uses_the_current_directory_and_refuses_empty_paths() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            absolute("--x (X)", Path::new("a/b")).unwrap(),
            cwd.join("a/b")
        );
        assert_eq!(
            absolute("--x (X)", Path::new("/a/b")).unwrap(),
            Path::new("/a/b")
        );
        let e = absolute("--packs-dir (ATTUNE_PACKS_DIR)", Path::new("")).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string()
                .contains("--packs-dir (ATTUNE_PACKS_DIR) is empty"),
            "{e}"
        );
        let mut db = "data/attune.db".to_string();
        make_absolute_str("--db (ATTUNE_DB)", &mut db).unwrap();
        assert_eq!(Path::new(&db), cwd.join("data/attune.db"));
    }

    #[test]
    fn an_unreadable_current_directory_names_the_path() {
        let e = PathError::NoCurrentDir {
            name: flag_name("packs-dir", "ATTUNE_PACKS_DIR"),
            path: "vol".into(),
            error: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert_eq!(e.exit_code(), 3);
        let text = e.to_string();
        assert!(
            text.starts_with("--packs-dir (ATTUNE_PACKS_DIR) vol is relative")
                && text.contains("current directory cannot be read"),
            "{text}"
        );
    }
}
