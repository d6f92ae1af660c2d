//! The data directory: where `kdc` may create a realm, and the checks that
//! keep a mistyped `--data` from creating one somewhere unexpected.
//!
//! A realm is created only in a directory that is missing (it is created,
//! mode 0700), empty, or holds nothing but the KDC's own files (a start that
//! failed half-way). A directory of anything else is refused before a byte
//! is written into it. Commands that work on an existing realm (`principal`,
//! `keytab`, `signing-key`) create nothing: a missing directory or one
//! without a store is an error naming the path.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// File name of the SQLite database inside the data directory.
pub(crate) const DATABASE_FILE: &str = "kdc.sqlite3";

/// The admin layer's replay cache in the data directory (and its `.lock`).
pub(crate) const ADMIN_REPLAY_STATE: &str = "admin-replay.state";

/// How many names of unrelated entries a refusal shows.
const SHOWN: usize = 3;

/// What a data directory holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DirState {
    /// It does not exist.
    Missing,
    /// It exists and is empty, or holds only the KDC's own files without a
    /// store.
    Empty,
    /// It holds the KDC's store.
    Store,
    /// It holds no store and other things: the names of some of them.
    Foreign(Vec<String>),
}

/// A data directory that cannot be used as asked.
#[derive(Debug, Error)]
#[non_exhaustive]
pub(crate) enum DataDirError {
    /// Reading or creating it failed.
    #[error("data directory {path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The path is a file, not a directory.
    #[error("data directory {0} is not a directory: check --data (KDC_DATA, `data` in kdc.toml)")]
    NotADirectory(PathBuf),
    /// A command that needs a realm was pointed at a missing directory.
    #[error(
        "data directory {0} does not exist: check --data (KDC_DATA, `data` in kdc.toml), or create a realm there \
         with `kdc init --data {0}`"
    )]
    Missing(PathBuf),
    /// A command that needs a realm was pointed at a directory without one.
    #[error(
        "{0} holds no KDC data (no {DATABASE_FILE}): check --data (KDC_DATA, `data` in kdc.toml), or create a \
         realm there with `kdc init --data {0}`"
    )]
    NoStore(PathBuf),
    /// A realm would be created in a directory of other things.
    #[error(
        "{dir} is not empty and holds no KDC realm (it has {found}): a new realm is only created in a missing or \
         empty directory. Check the path (--data, KDC_DATA, `data` in kdc.toml), or name a new directory"
    )]
    Foreign {
        /// The directory.
        dir: PathBuf,
        /// Some of what is in it, for the message.
        found: String,
    },
}

/// Whether `name` is a file the KDC itself writes into its data directory
/// (or one a fresh file system comes with).
fn is_own(name: &str) -> bool {
    name.starts_with(DATABASE_FILE)
        || name == crate::master_key::MASTER_KEY_FILE
        || name.starts_with(ADMIN_REPLAY_STATE)
        || name == "lost+found"
}

/// What `dir` holds, read without writing anything.
pub(crate) fn inspect(dir: &Path) -> Result<DirState, DataDirError> {
    let io = |source| DataDirError::Io { path: dir.to_owned(), source };
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DirState::Missing),
        Err(e) => return Err(io(e)),
        Ok(m) if !m.is_dir() => return Err(DataDirError::NotADirectory(dir.to_owned())),
        Ok(_) => {}
    }
    if dir.join(DATABASE_FILE).exists() {
        return Ok(DirState::Store);
    }
    let mut foreign = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let name = entry.map_err(io)?.file_name().to_string_lossy().into_owned();
        if !is_own(&name) {
            foreign.push(name);
        }
    }
    foreign.sort();
    Ok(if foreign.is_empty() { DirState::Empty } else { DirState::Foreign(foreign) })
}

/// Checks that a realm may be created in `dir` (when it holds none yet):
/// [`DirState::Missing`], [`DirState::Empty`] or [`DirState::Store`] (whose
/// store says whether it holds a realm). Writes nothing.
pub(crate) fn check_for_new_realm(dir: &Path) -> Result<DirState, DataDirError> {
    match inspect(dir)? {
        DirState::Foreign(names) => {
            let mut found = names.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
            if names.len() > SHOWN {
                found.push_str(&format!(" and {} more", names.len() - SHOWN));
            }
            Err(DataDirError::Foreign { dir: dir.to_owned(), found })
        }
        state => Ok(state),
    }
}

/// Checks that `dir` holds a store, for commands that work on an existing
/// realm. Writes nothing.
pub(crate) fn require_store(dir: &Path) -> Result<(), DataDirError> {
    match inspect(dir)? {
        DirState::Store => Ok(()),
        DirState::Missing => Err(DataDirError::Missing(dir.to_owned())),
        DirState::Empty | DirState::Foreign(_) => Err(DataDirError::NoStore(dir.to_owned())),
    }
}

/// Checks that `dir` exists, for commands on a realm whose principal store
/// is a database (the directory holds the master key). Writes nothing.
pub(crate) fn require_dir(dir: &Path) -> Result<(), DataDirError> {
    match inspect(dir)? {
        DirState::Missing => Err(DataDirError::Missing(dir.to_owned())),
        _ => Ok(()),
    }
}

/// Creates `dir` (and missing parents) with mode 0700; an existing one is
/// left as it is.
pub(crate) fn create(dir: &Path) -> Result<(), DataDirError> {
    if dir.exists() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| DataDirError::Io { path: dir.to_owned(), source })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_realm_is_only_created_where_nothing_else_lives() {
        let root = tempfile::tempdir().unwrap();
        let d = root.path().join("data");
        assert_eq!(check_for_new_realm(&d).unwrap(), DirState::Missing);
        create(&d).unwrap();
        assert_eq!(std::fs::metadata(&d).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(check_for_new_realm(&d).unwrap(), DirState::Empty);
        // Leftovers of a start that failed half-way are the KDC's own.
        std::fs::write(d.join("master.key"), "x").unwrap();
        std::fs::write(d.join("admin-replay.state.lock"), "").unwrap();
        assert_eq!(check_for_new_realm(&d).unwrap(), DirState::Empty);
        std::fs::write(d.join(DATABASE_FILE), "").unwrap();
        assert_eq!(check_for_new_realm(&d).unwrap(), DirState::Store);

        let junk = root.path().join("junk");
        std::fs::create_dir(&junk).unwrap();
        for n in ["notes.txt", "a", "b", "c"] {
            std::fs::write(junk.join(n), "mine").unwrap();
        }
        let e = check_for_new_realm(&junk).unwrap_err().to_string();
        assert!(e.contains("not empty") && e.contains("a, b, c and 1 more"), "{e}");
        assert_eq!(std::fs::read_dir(&junk).unwrap().count(), 4, "nothing written");

        let file = root.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(matches!(check_for_new_realm(&file), Err(DataDirError::NotADirectory(_))));
    }

    #[test]
    fn commands_on_a_realm_create_nothing() {
        let root = tempfile::tempdir().unwrap();
        let d = root.path().join("nonexistent");
        let e = require_store(&d).unwrap_err();
        assert!(matches!(e, DataDirError::Missing(_)) && e.to_string().contains("kdc init --data"), "{e}");
        assert!(!d.exists());
        let e = require_store(root.path()).unwrap_err();
        assert!(matches!(e, DataDirError::NoStore(_)), "{e}");
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    }
}
