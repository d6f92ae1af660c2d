//! A ticket cache in a file, shared safely by several processes of one user.
//!
//! - The directory is created with mode 0700 when missing; an existing one is
//!   refused when owned by another user or writable by group or others (who
//!   could swap the cache or its lock file for their own).
//! - The file is mode 0600, set explicitly whatever the umask, opened without
//!   following symlinks, and refused when owned by another user or readable
//!   or writable by group or others.
//! - Writes go to a new temporary file in the same directory, named
//!   `<file>.tmp.<pid>.<random>`, are synced, and renamed over the cache:
//!   readers see the old or the new contents, never a mix. Read-modify-write
//!   runs under an exclusive lock on `<file>.lock`.
//! - A crash between creating a temporary file and renaming it leaves the
//!   whole cache (TGT, session keys) under the temporary name. Writes happen
//!   only under the lock, so a temporary file found while holding the lock is
//!   such a leftover: every write removes them first, and logout removes them
//!   with the cache.
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
    dir: PathBuf,
}

/// How many times [`FileCache::lock`] retries when the lock file it locked
/// was replaced meanwhile (a logout removes it).
const LOCK_ATTEMPTS: usize = 8;

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

/// Whether `dir` may hold a ticket cache: a directory of this user that
/// nobody else can write to (else they could replace the cache, its lock or
/// a temporary file between our checks and our use). Group or others may
/// read or list it: the files in it are 0600.
fn check_directory(dir: &Path) -> Result<(), SdkError> {
    let meta = fs::metadata(dir).map_err(|e| err("reading", dir, e))?;
    if !meta.is_dir() {
        return Err(err("refusing", dir, "not a directory"));
    }
    if meta.uid() != rustix::process::geteuid().as_raw() {
        return Err(err("refusing cache directory", dir, "owned by another user"));
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(err(
            "refusing cache directory",
            dir,
            "writable by group or others (`chmod go-w` it, or choose a private directory)",
        ));
    }
    Ok(())
}

/// Whether `rest` (a directory entry's name after `<file>.`) is one of the
/// cache's temporary files: `tmp.<pid>.<random>` now, or `<11 base64url
/// characters>.tmp` as earlier versions named them.
fn is_temp_suffix(rest: &str) -> bool {
    let current = rest
        .strip_prefix("tmp.")
        .and_then(|r| r.split_once('.'))
        .is_some_and(|(pid, random)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) && !random.is_empty());
    let legacy = rest
        .strip_suffix(".tmp")
        .is_some_and(|r| r.len() == 11 && r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    current || legacy
}

impl FileCache {
    /// A cache at `path`, creating its directory (0700) if needed; refuses a
    /// directory owned by another user or writable by group or others.
    pub fn new(path: impl Into<PathBuf>) -> Result<Self, SdkError> {
        let path = path.into();
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_owned();
        if !dir.exists() {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(|e| err("creating", &dir, e))?;
        }
        check_directory(&dir)?;
        let mut lock_path = path.clone().into_os_string();
        lock_path.push(".lock");
        Ok(Self { path, lock_path: lock_path.into(), dir })
    }

    /// Where `tkt` keeps its tickets unless told otherwise (`TKT_CACHE`):
    /// `$XDG_CACHE_HOME/tkt/tickets.json`, else `~/.cache/tkt/tickets.json`
    /// (`./tkt/tickets.json` without a home directory). Other commands that
    /// use a `tkt login` (`kdc admin`) look there too.
    pub fn default_path() -> PathBuf {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(|| PathBuf::from("."));
        base.join("tkt").join("tickets.json")
    }

    /// Where the cache lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// An exclusive lock on `<file>.lock`. Logout removes that file while
    /// holding it, so a process that was waiting on it would then hold a
    /// lock on a file nobody else opens: the lock is kept only when the
    /// locked file is still the one at the path.
    fn lock(&self) -> Result<File, SdkError> {
        for _ in 0..LOCK_ATTEMPTS {
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
            let held = f.metadata().map_err(|e| err("reading", &self.lock_path, e))?;
            match fs::symlink_metadata(&self.lock_path) {
                Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => return Ok(f),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(err("reading", &self.lock_path, e)),
            }
        }
        Err(err("locking", &self.lock_path, "the lock file keeps being replaced"))
    }

    /// A new temporary file's path: `<file>.tmp.<pid>.<random>`, in the
    /// cache's directory so the rename is atomic and the cache can find it.
    fn temp_path(&self) -> PathBuf {
        let mut suffix = [0u8; 8];
        suffix.copy_from_slice(&kdc_proto::SecretKey::generate().expose()[..8]);
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(format!(".tmp.{}.{}", std::process::id(), kdc_proto::b64::encode(suffix)));
        PathBuf::from(tmp)
    }

    /// Whether a directory entry named `name` is one of this cache's
    /// temporary files.
    fn is_temp_name(&self, name: &std::ffi::OsStr) -> bool {
        let (Some(name), Some(file)) = (name.to_str(), self.path.file_name().and_then(|f| f.to_str())) else {
            return false;
        };
        name.strip_prefix(file).and_then(|r| r.strip_prefix('.')).is_some_and(is_temp_suffix)
    }

    /// Removes every temporary file of this cache. Call only under the lock:
    /// then no write is in progress, and each one found is a crash's leftover.
    fn remove_leftovers(&self) -> Result<(), SdkError> {
        let entries = fs::read_dir(&self.dir).map_err(|e| err("listing", &self.dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| err("listing", &self.dir, e))?;
            if !self.is_temp_name(&entry.file_name()) {
                continue;
            }
            match fs::remove_file(entry.path()) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(err("removing", &entry.path(), e)),
            }
        }
        Ok(())
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
        // The version first: an older format holds nothing a login does not
        // get again, so it reads as empty (and is replaced at the next
        // write); a newer one is another program's, left alone.
        #[derive(serde::Deserialize)]
        struct Versioned {
            version: u32,
        }
        let not_a_cache = || err("reading", &self.path, "not a ticket cache");
        let Versioned { version } = serde_json::from_slice(&text).map_err(|_| not_a_cache())?;
        if version < CACHE_VERSION {
            return Ok(CacheContents::default());
        }
        if version > CACHE_VERSION {
            return Err(err("reading", &self.path, format!("unsupported cache version {version}")));
        }
        serde_json::from_slice(&text).map_err(|_| not_a_cache())
    }

    fn write(&self, c: &CacheContents) -> Result<(), SdkError> {
        let json = Zeroizing::new(serde_json::to_vec(c).map_err(|e| err("encoding", &self.path, e))?);
        let tmp = self.temp_path();
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
        self.remove_leftovers()?;
        self.write(&c)
    }

    fn destroy(&self) -> Result<(), SdkError> {
        let _lock = self.lock()?;
        match fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err("removing", &self.path, e)),
        }
        self.remove_leftovers()?;
        let _ = fs::remove_file(&self.lock_path);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CachedTicket;
    use kdc_proto::EncTicketPart;
    use kdc_proto::{Kvno, SecretKey, TicketFlags};

    fn ticket(service: &str) -> CachedTicket {
        let part = EncTicketPart {
            session_key: SecretKey::generate(),
            nonce: "n".into(),
            service: service.parse().unwrap(),
            auth_time: 1,
            start_time: 1,
            end_time: 2,
            renew_till: None,
            flags: TicketFlags::default(),
            kvno: Kvno(1),
        };
        CachedTicket { ticket: "t".into(), part }
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
    fn an_older_cache_reads_as_empty_and_a_newer_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.json");
        let c = FileCache::new(&path).unwrap();
        let write = |text: &str| {
            fs::write(&path, text).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        };
        // Version 1 kept tickets flat; its tickets are dropped, and the next
        // write replaces the file.
        write(r#"{"version":1,"principal":"alice@R","tgt":{"service":"krbtgt/R@R","ticket":"t"},"tickets":{}}"#);
        assert_eq!(c.snapshot().unwrap(), CacheContents::default());
        c.update(&mut |_| {}).unwrap();
        assert_eq!(c.snapshot().unwrap().version, CACHE_VERSION);
        write(&format!(r#"{{"version":{},"tickets":{{}}}}"#, CACHE_VERSION + 1));
        assert!(c.snapshot().unwrap_err().to_string().contains("unsupported cache version"));
        assert!(c.update(&mut |_| {}).is_err(), "a newer cache was overwritten");
        write(r#"{"tickets":{}}"#);
        assert!(c.snapshot().unwrap_err().to_string().contains("not a ticket cache"));
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

    /// What a crash between creating the temporary file and renaming it
    /// leaves: the whole cache (TGT, session keys) under the temp name.
    fn leave_crash_leftover(path: &Path, tag: &str) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".tmp.999999.{tag}"));
        let leftover = PathBuf::from(name);
        fs::copy(path, &leftover).unwrap();
        leftover
    }

    #[test]
    fn logout_removes_a_crash_leftover_and_the_next_write_cleans_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.json");
        let c = FileCache::new(&path).unwrap();
        c.update(&mut |c| {
            c.tgt = Some(ticket("krbtgt/R@R"));
        })
        .unwrap();
        let stale = leave_crash_leftover(&path, "a");
        c.update(&mut |_| {}).unwrap();
        assert!(!stale.exists(), "a write under the lock left a crash's temporary file");
        let stale = leave_crash_leftover(&path, "b");
        // A file of another name in the same directory is not the cache's to remove.
        let unrelated = dir.path().join("cache.json.tmp-notes");
        fs::write(&unrelated, b"mine").unwrap();
        c.destroy().unwrap();
        assert!(!stale.exists(), "logout left the TGT and session key in a temporary file");
        assert!(!path.exists());
        assert!(unrelated.exists(), "removed a file that is not the cache's");
    }

    #[test]
    fn temporary_files_are_named_so_the_cache_can_find_them() {
        let dir = tempfile::tempdir().unwrap();
        let c = FileCache::new(dir.path().join("cache.json")).unwrap();
        let tmp = c.temp_path();
        let name = tmp.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(&format!("cache.json.tmp.{}.", std::process::id())), "{name}");
        assert!(c.is_temp_name(std::ffi::OsStr::new(&name)));
        assert!(tmp.parent() == Some(dir.path()));
        // Earlier versions' name for them, which a crash may have left.
        assert!(c.is_temp_name(std::ffi::OsStr::new("cache.json.AAECAwQFBgc.tmp")));
        for other in ["cache.json", "cache.json.lock", "cache.json.tmp", "cache.jsonx.tmp.1.a", "other.tmp.1.a"] {
            assert!(!c.is_temp_name(std::ffi::OsStr::new(other)), "{other}");
        }
    }

    #[test]
    fn refuses_a_directory_writable_by_others_or_owned_by_another_user() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        fs::create_dir(&shared).unwrap();
        for mode in [0o777, 0o1777, 0o770, 0o730, 0o702] {
            fs::set_permissions(&shared, fs::Permissions::from_mode(mode)).unwrap();
            let e = FileCache::new(shared.join("cache.json")).unwrap_err();
            assert!(e.to_string().contains("writable by group or others"), "{mode:o}: {e}");
        }
        for mode in [0o700, 0o750, 0o755] {
            fs::set_permissions(&shared, fs::Permissions::from_mode(mode)).unwrap();
            FileCache::new(shared.join("cache.json")).unwrap();
        }
        // Someone else's directory: as root, give one away; otherwise `/` is root's.
        let foreign = if rustix::process::geteuid().is_root() {
            std::os::unix::fs::chown(&shared, Some(65534), Some(65534)).unwrap();
            shared.join("cache.json")
        } else {
            PathBuf::from("/cache.json")
        };
        let e = FileCache::new(&foreign).unwrap_err();
        assert!(e.to_string().contains("owned by another user"), "{e}");
    }

    #[test]
    fn a_lock_file_removed_by_logout_does_not_split_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.json");
        let c = FileCache::new(&path).unwrap();
        let logout = c.lock().unwrap();
        // A writer starts waiting on the lock file a logout is about to remove.
        let writer = {
            let c = c.clone();
            std::thread::spawn(move || {
                c.update(&mut |c| {
                    c.tickets.insert("HTTP/x@R".into(), ticket("HTTP/x@R"));
                })
                .unwrap()
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(200));
        fs::remove_file(&c.lock_path).unwrap();
        // Another process locks the new lock file, then the logout ends.
        let other = c.lock().unwrap();
        drop(logout);
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(!path.exists(), "a writer ran while another process held the lock");
        drop(other);
        writer.join().unwrap();
        assert_eq!(c.snapshot().unwrap().tickets.len(), 1);
    }
}
