//! The key that seals secret parameters at rest, and sealing itself:
//! AES-256-GCM (RustCrypto's `aes-gcm`, as upstream Attune uses) under one
//! 256-bit key, with a fresh random 96-bit nonce for every value.
//!
//! Where the key comes from (see [`crate::Args`]):
//! - `ATTUNE_SECRETS_KEY`: the key itself, 64 hex digits; or
//! - a key file (`--secrets-key-file`, `ATTUNE_SECRETS_KEY_FILE`), by default
//!   `<db>.key` beside the database: a file of its own, never the database.
//!   When it does not exist it is generated at startup, mode 0600. An
//!   existing one that its group or others may read or write is refused
//!   (exit 3), naming the `chmod` to run.
//! - A `:memory:` database with neither gets a random key that lives as long
//!   as the process, as the database does.
//!
//! A sealed value is `nonce || ciphertext || tag`. Nothing here logs or
//! prints the key; `Debug` shows only where it came from.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use aes_gcm::aead::{Aead, Generate, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};

/// Hex digits of a key: 256 bits.
pub const KEY_HEX_DIGITS: usize = 64;

/// Bytes of the random nonce before each sealed value.
const NONCE_BYTES: usize = 12;

/// Why a key cannot be had, or a value cannot be sealed or opened; the
/// message names the key's source and what to do.
#[derive(Debug, PartialEq, Eq)]
pub struct KeyError(pub String);

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KeyError {}

/// The secrets key, ready to seal and open values.
pub struct SecretsKey {
    cipher: Aes256Gcm,
    source: String,
}

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsKey")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// The bytes of `text`, 64 hex digits (surrounding whitespace ignored).
fn decode_hex(text: &str) -> Option<[u8; 32]> {
    let digits = text.trim().as_bytes();
    if digits.len() != KEY_HEX_DIGITS {
        return None;
    }
    let mut key = [0u8; 32];
    for (byte, pair) in key.iter_mut().zip(digits.chunks(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(key)
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The key as given in `ATTUNE_SECRETS_KEY` (or `--secrets-key`); never shown
/// by `Debug`.
#[derive(Clone)]
pub struct KeyText(String);

impl std::str::FromStr for KeyText {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(KeyText(s.to_string()))
    }
}

impl std::fmt::Debug for KeyText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyText(..)")
    }
}

impl SecretsKey {
    /// The key of the database `db`: `text` (from `ATTUNE_SECRETS_KEY`) when
    /// given, else the key file `file`, by default `<db>.key`; for a
    /// `:memory:` database without either, an [`SecretsKey::ephemeral`] one.
    pub fn for_db(
        db: &str,
        file: Option<&Path>,
        text: Option<&KeyText>,
    ) -> Result<SecretsKey, KeyError> {
        match (text, file) {
            (Some(KeyText(hex)), _) => SecretsKey::from_hex(hex, attune_service::env::SECRETS_KEY),
            (None, Some(file))
                if ["", "-wal", "-shm"]
                    .iter()
                    .any(|suffix| file == Path::new(&format!("{db}{suffix}"))) =>
            {
                Err(KeyError(format!(
                    "--secrets-key-file {} is the database or one of its files; the key lives in a file of its own (by default {db}.key)",
                    file.display()
                )))
            }
            (None, Some(file)) => SecretsKey::from_file(file),
            (None, None) if db == ":memory:" => SecretsKey::ephemeral(),
            (None, None) => SecretsKey::from_file(Path::new(&format!("{db}.key"))),
        }
    }

    fn new(key: &Key<Aes256Gcm>, source: String) -> SecretsKey {
        SecretsKey {
            cipher: Aes256Gcm::new(key),
            source,
        }
    }

    /// A random key that is never written anywhere: for a `:memory:`
    /// database, whose secrets die with the process anyway.
    pub fn ephemeral() -> Result<SecretsKey, KeyError> {
        let key = Key::<Aes256Gcm>::try_generate()
            .map_err(|e| KeyError(format!("cannot generate a secrets key: {e}")))?;
        Ok(SecretsKey::new(&key, "a key held in memory only".into()))
    }

    /// The key written as 64 hex digits; `source` names where the text came
    /// from, for messages.
    pub fn from_hex(text: &str, source: &str) -> Result<SecretsKey, KeyError> {
        let bytes = decode_hex(text).ok_or_else(|| {
            KeyError(format!(
                "{source} is not a secrets key: a key is {KEY_HEX_DIGITS} hex digits (256 bits), for example from `openssl rand -hex 32`"
            ))
        })?;
        Ok(SecretsKey::new(
            &Key::<Aes256Gcm>::from(bytes),
            source.into(),
        ))
    }

    /// The key in the file at `path`, generated there (mode 0600) when the
    /// file does not exist. Refuses a file its group or others may read or
    /// write, and anything but a regular file.
    pub fn from_file(path: &Path) -> Result<SecretsKey, KeyError> {
        let source = format!("the secrets key file {}", path.display());
        match std::fs::metadata(path) {
            Ok(meta) => {
                if !meta.is_file() {
                    return Err(KeyError(format!(
                        "{source} is not a regular file; point --secrets-key-file at the key file"
                    )));
                }
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(KeyError(format!(
                        "{source} has mode {mode:04o}: its group or others may read or change it; run `chmod 600 {}`",
                        path.display()
                    )));
                }
                let text = std::fs::read_to_string(path)
                    .map_err(|e| KeyError(format!("cannot read {source}: {e}")))?;
                SecretsKey::from_hex(&text, &source)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Key::<Aes256Gcm>::try_generate()
                    .map_err(|e| KeyError(format!("cannot generate a secrets key: {e}")))?;
                write_new_key_file(path, &encode_hex(&key))
                    .map_err(|e| KeyError(format!("cannot create {source}: {e}")))?;
                tracing::info!(file = %path.display(), "generated a new secrets key (mode 0600); keep it with the database's backups, apart from them");
                Ok(SecretsKey::new(&key, source))
            }
            Err(e) => Err(KeyError(format!("cannot read {source}: {e}"))),
        }
    }

    /// Where the key came from, for messages.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// `plain` sealed under the key with a fresh random nonce.
    pub fn seal(&self, plain: &[u8]) -> Result<Vec<u8>, KeyError> {
        let nonce =
            Nonce::try_generate().map_err(|e| KeyError(format!("cannot generate a nonce: {e}")))?;
        let sealed = self
            .cipher
            .encrypt(&nonce, plain)
            .map_err(|e| KeyError(format!("cannot seal a secret value: {e}")))?;
        let mut out = Vec::with_capacity(NONCE_BYTES + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The plain bytes of a value [`SecretsKey::seal`] made under this key;
    /// an error when it was sealed under another key or altered.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, KeyError> {
        let not_ours = || {
            KeyError(format!(
                "a sealed secret does not open with {}: it was sealed under another key, or altered",
                self.source
            ))
        };
        if sealed.len() < NONCE_BYTES {
            return Err(not_ours());
        }
        let (nonce, text) = sealed.split_at(NONCE_BYTES);
        let nonce = Nonce::try_from(nonce).map_err(|_| not_ours())?;
        self.cipher.decrypt(&nonce, text).map_err(|_| not_ours())
    }
}

/// Writes a new key file (it must not exist) readable by its owner only, and
/// makes it durable: file and directory synced, so a crash cannot leave
/// secrets sealed under a key that was never stored.
fn write_new_key_file(path: &Path, hex: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(format!("{hex}\n").as_bytes())?;
    f.sync_all()?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_value_gets_its_own_nonce_and_opens_only_under_its_key() {
        let k = SecretsKey::ephemeral().unwrap();
        let a = k.seal(b"s3cr3t").unwrap();
        let b = k.seal(b"s3cr3t").unwrap();
        assert_ne!(a, b, "the same value sealed twice must differ (nonce)");
        assert!(!a.windows(6).any(|w| w == b"s3cr3t"));
        assert_eq!(k.open(&a).unwrap(), b"s3cr3t");
        let other = SecretsKey::ephemeral().unwrap();
        let e = other.open(&a).unwrap_err();
        assert!(e.0.contains("another key"), "{e}");
        assert!(k.open(&a[..5]).is_err());
        let mut altered = a.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(k.open(&altered).is_err());
    }

    /// The key file is generated on first start, 0600, and read back after.
    #[test]
    fn a_missing_key_file_is_generated_owner_only_and_read_back() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("attune.db.key");
        let first = SecretsKey::from_file(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim().len(), KEY_HEX_DIGITS);
        let sealed = first.seal(b"v").unwrap();
        let again = SecretsKey::from_file(&path).unwrap();
        assert_eq!(again.open(&sealed).unwrap(), b"v");
        assert!(format!("{again:?}").contains("attune.db.key"));
        assert!(!format!("{again:?}").contains(text.trim()));
    }

    /// A key file others can read is refused, naming the file and the chmod.
    #[test]
    fn a_key_file_readable_by_others_is_refused_with_the_chmod_to_run() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("k");
        std::fs::write(&path, "00".repeat(32)).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = SecretsKey::from_file(&path).unwrap_err();
            assert!(
                e.0.contains(&format!("chmod 600 {}", path.display())),
                "{mode:o}: {e}"
            );
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(SecretsKey::from_file(&path).is_ok());
    }

    /// The key never sits in the database's own file.
    #[test]
    fn the_key_file_cannot_be_the_database() {
        let e = SecretsKey::for_db("/d/a.db", Some(Path::new("/d/a.db-wal")), None).unwrap_err();
        assert!(e.0.contains("a file of its own"), "{e}");
    }

    #[test]
    fn a_key_that_is_not_64_hex_digits_is_refused() {
        for bad in ["", "abc", &"zz".repeat(32), &"00".repeat(33)] {
            let e = SecretsKey::from_hex(bad, "ATTUNE_SECRETS_KEY").unwrap_err();
            assert!(
                e.0.contains("ATTUNE_SECRETS_KEY") && e.0.contains("64 hex digits"),
                "{e}"
            );
        }
        assert!(SecretsKey::from_hex(&format!(" {}\n", "aB".repeat(32)), "x").is_ok());
    }
}
