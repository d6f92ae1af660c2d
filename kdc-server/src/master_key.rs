//! The master key: seals every long-term key and the signing key at rest.
//!
//! It lives in `master.key` (mode 0600) in the data directory, or comes from
//! `KDC_MASTER_KEY` (base64url) so it can be kept apart from the database.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use kdc_proto::SecretKey;
use kdc_proto::limits::MAX_SEALED_LEN;
use kdc_proto::{SealedObject, Usage};
use thiserror::Error;
use zeroize::Zeroizing;

/// File name of the master key inside the data directory.
pub(crate) const MASTER_KEY_FILE: &str = "master.key";

/// Why the master key could not be had or used.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum MasterKeyError {
    /// Reading or writing the key file failed.
    #[error("master key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The key file is readable or writable by others.
    #[error("master key file {0} must be mode 0600 (it is readable or writable by group or others)")]
    Permissions(PathBuf),
    /// The key is not 32 bytes of base64url.
    #[error("master key is not a base64url-encoded 256-bit key")]
    Malformed,
    /// Sealed material did not open: wrong master key, or tampered data.
    #[error("stored key material does not open under this master key")]
    WrongKey,
    /// Sealing key material failed (nothing was written).
    #[error("sealing key material failed")]
    Seal,
}

/// The KDC master key.
#[derive(Debug)]
pub struct MasterKey(SecretKey);

impl MasterKey {
    /// Wraps a key (tests, or one read elsewhere).
    pub fn new(key: SecretKey) -> Self {
        Self(key)
    }

    /// Reads the key from `env_value` when given, else from the data
    /// directory's key file, creating that file (0600) if `create` is set and
    /// it does not exist yet.
    pub fn load(data_dir: &Path, env_value: Option<&str>, create: bool) -> Result<Self, MasterKeyError> {
        if let Some(v) = env_value {
            return SecretKey::from_b64(v.trim()).map(Self).map_err(|_| MasterKeyError::Malformed);
        }
        let path = data_dir.join(MASTER_KEY_FILE);
        let io = |source| MasterKeyError::Io { path: path.clone(), source };
        match fs::metadata(&path) {
            Ok(meta) => {
                if meta.permissions().mode() & 0o077 != 0 {
                    return Err(MasterKeyError::Permissions(path));
                }
                let text = Zeroizing::new(fs::read_to_string(&path).map_err(io)?);
                SecretKey::from_b64(text.trim()).map(Self).map_err(|_| MasterKeyError::Malformed)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let key = SecretKey::generate();
                let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).map_err(io)?;
                let text = Zeroizing::new(format!("{}\n", key.to_b64()));
                f.write_all(text.as_bytes()).map_err(io)?;
                f.sync_all().map_err(io)?;
                Ok(Self(key))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// Seals `key` at rest, bound to `owner` (e.g. `PRINCIPAL_ID#KVNO`): the
    /// binding is in the authenticated header, so a sealed key copied onto
    /// another row will not open there.
    pub fn seal_key(&self, owner: &str, key: &SecretKey) -> Result<String, MasterKeyError> {
        kdc_proto::seal(&self.0, owner, Usage::KeyAtRest, key.expose()).map_err(|_| MasterKeyError::Seal)
    }

    /// Opens a key sealed by [`Self::seal_key`] for the same `owner`.
    pub fn open_key(&self, owner: &str, sealed: &str) -> Result<SecretKey, MasterKeyError> {
        let obj = SealedObject::parse(sealed, MAX_SEALED_LEN).map_err(|_| MasterKeyError::WrongKey)?;
        if obj.kid() != owner {
            return Err(MasterKeyError::WrongKey);
        }
        let plain = obj.open(&self.0, Usage::KeyAtRest).map_err(|_| MasterKeyError::WrongKey)?;
        SecretKey::from_slice(&plain).map_err(|_| MasterKeyError::WrongKey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_0600_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let a = MasterKey::load(dir.path(), None, true).unwrap();
        let mode = fs::metadata(dir.path().join(MASTER_KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = MasterKey::load(dir.path(), None, false).unwrap();
        assert_eq!(a.0, b.0);
    }

    #[test]
    fn refuses_a_world_readable_file() {
        let dir = tempfile::tempdir().unwrap();
        MasterKey::load(dir.path(), None, true).unwrap();
        let p = dir.path().join(MASTER_KEY_FILE);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(MasterKey::load(dir.path(), None, false), Err(MasterKeyError::Permissions(_))));
    }

    #[test]
    fn sealed_keys_are_bound_to_their_owner() {
        let m = MasterKey::new(SecretKey::generate());
        let k = SecretKey::generate();
        let s = m.seal_key("p1#1", &k).unwrap();
        assert_eq!(m.open_key("p1#1", &s).unwrap(), k);
        assert!(m.open_key("p2#1", &s).is_err());
        assert!(MasterKey::new(SecretKey::generate()).open_key("p1#1", &s).is_err());
    }
}
