//! A ticket cache in a file, shared safely by several processes of one user.
//!
//! - The directory is created with mode 0700 when missing.
//! - The file is mode 0600, set explicitly whatever the umask, opened without
//!   following symlinks, and refused when owned by another user or readable
//!   or writable by group or others.
//! - Writes go to a new temporary file in the same directory, are synced, and
//!   renamed over the cache: readers see the old or the new contents, never
//!   a mix. Read-modify-write runs under an exclusive lock on `<file>.lock`.
//! - The format is versioned JSON ([`crate::cache::CACHE_VERSION`]).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::cache::{CACHE_VERSION, CacheContents, TicketCache};
use crate::error::SdkError;

/// The file-backed cache.
#[derive(Debug, Clone)]
pub struct FileCache {
    path: PathBuf,
    lock_path: PathBuf,
}

fn err(what: &str, path: &Path, e: impl std::fmt::Display) -> SdkError {
    SdkError::Cache(format!("{what} {}: {e}", path.display()))
}

fn no_follow() -> i32 {
    i32::try_from(rustix::fs::OFlags::NOFOLLOW.bits()).unwrap_or(0)
}

fn check_owner_and_mode(path: &Path, file: &File) -> Result<(), SdkError> {
    let meta = file.metadata().map_err(|e| err("reading", path, e))?;
    if meta.uid() != rustix::process::geteuid().as_raw() {
        return Err(err("refusing", path, "owned by another user"));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(err("refusing", path, "readable or writable by group or others (must be 0600)"));
    }
    Ok(())
}

impl FileCache {
    /// A cache at `path`, creating its directory (0700) if needed.
    pub fn new(path: impl Into<PathBuf>) -> Result<Self, SdkError> {
        let path = path.into();
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if !dir.exists() {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| err("creating", dir, e))?;
        }
        let mut lock_path = path.clone().into_os_string();
        lock_path.push(".lock");
        Ok(Self { path, lock_path: lock_path.into() })
    }

    /// Where the cache lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> Result<File, SdkError> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(no_follow())
            .open(&self.lock_path)
            .map_err(|e| err("opening", &self.lock_path, e))?;
        check_owner_and_mode(&self.lock_path, &f)?;
        f.lock().map_err(|e| err("locking", &self.lock_path, e))?;
        Ok(f)
    }

    fn read(&self) -> Result<CacheContents, SdkError> {
        let mut f = match OpenOptions::new().read(true).custom_flags(no_follow()).open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(CacheContents::default()),
            Err(e) => return Err(err("opening", &self.path, e)),
        };
        check_owner_and_mode(&self.path, &f)?;
        let mut text = Zeroizing::new(Vec::new());
        f.read_to_end(&mut text).map_err(|e| err("reading", &self.path, e))?;
        if text.is_empty() {
            return Ok(CacheContents::default());
        }
        let c: CacheContents =
            serde_json::from_slice(&text).map_err(|_| err("reading", &self.path, "not a ticket cache"))?;
        if c.version != CACHE_VERSION {
            return Err(err("reading", &self.path, format!("unsupported cache version {}", c.version)));
        }
        Ok(c)
    }

    fn write(&self, c: &CacheContents) -> Result<(), SdkError> {
        let json = Zeroizing::new(serde_json::to_vec(c).map_err(|e| err("encoding", &self.path, e))?);
        let mut suffix = [0u8; 8];
        suffix.copy_from_slice(&kdc_proto::SecretKey::generate().expose()[..8]);
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(format!(".{}.tmp", kdc_proto::b64::encode(suffix)));
        let tmp = PathBuf::from(tmp);
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(no_follow())
                .open(&tmp)
                .map_err(|e| err("creating", &tmp, e))?;
            f.set_permissions(fs::Permissions::from_mode(0o600)).map_err(|e| err("securing", &tmp, e))?;
            f.write_all(&json).map_err(|e| err("writing", &tmp, e))?;
            f.sync_all().map_err(|e| err("syncing", &tmp, e))?;
            fs::rename(&tmp, &self.path).map_err(|e| err("replacing", &self.path, e))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}

impl TicketCache for FileCache {
    fn snapshot(&self) -> Result<CacheContents, SdkError> {
        let _lock = self.lock()?;
        self.read()
    }

    fn update(&self, change: &mut dyn FnMut(&mut CacheContents)) -> Result<(), SdkError> {
        let _lock = self.lock()?;
        let mut c = self.read()?;
        c.version = CACHE_VERSION;
        change(&mut c);
        self.write(&c)
    }

    fn destroy(&self) -> Result<(), SdkError> {
        let _lock = self.lock()?;
        match fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err("removing", &self.path, e)),
        }
        let _ = fs::remove_file(&self.lock_path);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CachedTicket;
    use kdc_proto::{Kvno, SecretKey, TicketFlags};

    fn ticket(service: &str) -> CachedTicket {
        CachedTicket {
            service: service.parse().unwrap(),
            ticket: "t".into(),
            session_key: SecretKey::generate(),
            start_time: 1,
            end_time: 2,
            renew_till: None,
            flags: TicketFlags::default(),
            kvno: Kvno(1),
        }
    }

    #[test]
    fn round_trip_mode_and_destroy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/cache.json");
        let c = FileCache::new(&path).unwrap();
        assert_eq!(fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
        c.update(&mut |c| {
            c.tickets.insert("HTTP/a@R".into(), ticket("HTTP/a@R"));
        })
        .unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(c.snapshot().unwrap().tickets.len(), 1);
        c.destroy().unwrap();
        assert!(!path.exists());
        assert!(c.snapshot().unwrap().tickets.is_empty());
    }

    #[test]
    fn refuses_a_group_readable_file_and_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.json");
        let c = FileCache::new(&path).unwrap();
        c.update(&mut |_| {}).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(c.snapshot().is_err());
        fs::remove_file(&path).unwrap();
        let target = dir.path().join("elsewhere");
        fs::write(&target, b"{}").unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        assert!(c.snapshot().is_err(), "followed a symlink");
    }

    #[test]
    fn concurrent_updates_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.json");
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let c = FileCache::new(&path).unwrap();
                    for j in 0..20 {
                        let name = format!("HTTP/s{i}-{j}@R");
                        c.update(&mut |c| {
                            c.tickets.insert(name.clone(), ticket(&name));
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(FileCache::new(&path).unwrap().snapshot().unwrap().tickets.len(), 160);
    }
}
