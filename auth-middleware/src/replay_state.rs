//! A replay cache that survives restarts: the in-memory cache, saved to a
//! state file at a clean shutdown and loaded at the next start.
//!
//! Why: an in-memory cache knows nothing of what an earlier process accepted,
//! so it must refuse, as stale, every authenticator whose acceptance window
//! opened before it started — every request for the first max-skew after a
//! start. With a state file the next process knows instead:
//!
//! - **no file**: this service never ran with this file, so nothing came
//!   before (first start): no warm-up;
//! - **a clean snapshot**: its entries are loaded and the cache remembers
//!   since the snapshot's own horizon: no warm-up;
//! - **a "running" marker** (the last process crashed, or was killed) or an
//!   unreadable file: what it accepted is lost, so the cache remembers only
//!   from now (the warm-up applies), and says so in the log.
//!
//! At start the file is replaced by a "running" marker (fsynced), so a crash
//! from then on is detected. One process at a time: an exclusive lock on
//! `<file>.lock`, held while the cache lives, refuses a second process on the
//! same file (whose crash the first one's clean snapshot would hide). A
//! snapshot that no longer fits the cache (its capacity shrank) counts as
//! unclean. The file holds keyed hashes of authenticator tags and their
//! window ends: nothing secret, but it is written mode 0600.
//!
//! The trust assumption: a missing file means this service never ran with
//! it. A service whose disk does not survive a restart (an ephemeral
//! container volume) must keep the file on a persistent volume or share a
//! replay cache instead; otherwise every restart looks like a first start.
//!
//! Format (little-endian): `kdc-replay-state/v1\n`, a status byte (0
//! running, 1 clean), a flag byte and `u64` (remembers-since, when the flag
//! is 1), a `u64` count, then `count` × (16-byte key, `u64` window end in ms).

use std::io::{Read, Write};
use std::path::Path;

use kdc_proto::UnixMillis;

use crate::replay::InMemoryReplayCache;

const MAGIC: &[u8] = b"kdc-replay-state/v1\n";
const RUNNING: u8 = 0;
const CLEAN: u8 = 1;
const ENTRY_LEN: usize = 24;

/// What a state file said at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StartKind {
    /// No file: the first start.
    First,
    /// A clean snapshot with this many live entries was loaded.
    Restored(usize),
    /// The previous process did not shut down cleanly (or the file was
    /// unreadable): warm-up applies.
    Unclean,
}

struct Snapshot {
    status: u8,
    remembers_since: Option<UnixMillis>,
    entries: Vec<([u8; 16], UnixMillis)>,
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Parses a state file, refusing anything not exactly in the format or with
/// more than `max_entries` entries.
fn parse(bytes: &[u8], max_entries: usize) -> Option<Snapshot> {
    let rest = bytes.strip_prefix(MAGIC)?;
    let (&status, rest) = rest.split_first()?;
    let (&flag, rest) = rest.split_first()?;
    let since = u64_at(rest, 0)?;
    let count = usize::try_from(u64_at(rest, 8)?).ok()?;
    let body = rest.get(16..)?;
    if count > max_entries || body.len() != count.checked_mul(ENTRY_LEN)? || !matches!(status, RUNNING | CLEAN) {
        return None;
    }
    let remembers_since = match flag {
        0 => None,
        1 => Some(UnixMillis(since)),
        _ => return None,
    };
    let entries = body
        .chunks_exact(ENTRY_LEN)
        .filter_map(|e| Some((e.get(..16)?.try_into().ok()?, UnixMillis(u64_at(e, 16)?))))
        .collect();
    Some(Snapshot { status, remembers_since, entries })
}

fn encode(status: u8, remembers_since: Option<UnixMillis>, entries: &[([u8; 16], UnixMillis)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + 18 + entries.len() * ENTRY_LEN);
    out.extend_from_slice(MAGIC);
    out.push(status);
    out.push(u8::from(remembers_since.is_some()));
    out.extend_from_slice(&remembers_since.map_or(0, |t| t.0).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for (key, until) in entries {
        out.extend_from_slice(key);
        out.extend_from_slice(&until.0.to_le_bytes());
    }
    out
}

/// The exclusive lock on a state file, held for as long as the cache that
/// was loaded from it serves.
#[derive(Debug)]
pub(crate) struct StateLock {
    _file: std::fs::File,
}

fn with_suffix(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// Takes the exclusive lock on `<path>.lock`, or fails at once when another
/// process holds it.
fn lock(path: &Path) -> std::io::Result<StateLock> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(with_suffix(path, ".lock"))?;
    match file.try_lock() {
        Ok(()) => Ok(StateLock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(std::io::Error::new(std::io::ErrorKind::WouldBlock, "another process is using this replay state file"))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Writes `bytes` to `path` atomically and durably: a new temporary file in
/// the same directory (random name, created exclusively, so it never follows
/// or reuses an existing path), fsynced, renamed over `path`, and the
/// directory fsynced.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut nonce = [0u8; 8];
    rand::fill(&mut nonce[..]);
    let tmp = with_suffix(path, &format!(".tmp.{}", u64::from_le_bytes(nonce)));
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    let written = f.write_all(bytes).and_then(|()| f.sync_all());
    drop(f);
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::File::open(dir)?.sync_all()
}

/// Opens the replay cache kept in `path`: loads a clean snapshot, or starts
/// fresh (first start) or with a warm-up (after a crash), then marks the file
/// "running". See the module docs.
pub(crate) fn open(
    path: &Path,
    capacity: usize,
    per_principal: usize,
    now: UnixMillis,
) -> std::io::Result<(InMemoryReplayCache, StartKind, StateLock)> {
    let held = lock(path)?;
    let max_file = MAGIC.len() + 18 + capacity.saturating_mul(ENTRY_LEN);
    let read = match std::fs::File::open(path) {
        Ok(f) => {
            let mut bytes = Vec::new();
            f.take(u64::try_from(max_file).unwrap_or(u64::MAX).saturating_add(1)).read_to_end(&mut bytes)?;
            Some(parse(&bytes, capacity))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let (cache, kind) = match read {
        None => (InMemoryReplayCache::with_history(capacity, per_principal, None), StartKind::First),
        Some(Some(snap)) if snap.status == CLEAN => {
            let cache = InMemoryReplayCache::with_history(capacity, per_principal, snap.remembers_since);
            if cache.restore(snap.entries, now) == 0 {
                let n = cache.len();
                (cache, StartKind::Restored(n))
            } else {
                (InMemoryReplayCache::new(capacity, per_principal, now), StartKind::Unclean)
            }
        }
        Some(_) => (InMemoryReplayCache::new(capacity, per_principal, now), StartKind::Unclean),
    };
    use crate::replay::ReplayCache as _;
    write_atomically(path, &encode(RUNNING, cache.remembers_since(), &[]))?;
    Ok((cache, kind, held))
}

/// Saves `cache` to `path` as a clean snapshot (at a graceful shutdown, after
/// the last request was answered).
pub(crate) fn save(cache: &InMemoryReplayCache, path: &Path, now: UnixMillis) -> std::io::Result<()> {
    use crate::replay::ReplayCache as _;
    write_atomically(path, &encode(CLEAN, cache.remembers_since(), &cache.live_entries(now)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::{ReplayCache, ReplayEntry, ReplayRefusal};

    fn entry(key: u8, until: u64, now: u64) -> ReplayEntry<'static> {
        ReplayEntry { key: [key; 16], principal: "p", remember_until: UnixMillis(until), now: UnixMillis(now) }
    }

    #[tokio::test]
    async fn first_start_clean_restart_and_crash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay.state");
        // First start: nothing came before.
        let (c, kind, held) = open(&path, 100, 100, UnixMillis(1_000)).unwrap();
        assert_eq!((kind, c.remembers_since()), (StartKind::First, None));
        c.check_and_insert(entry(1, 5_000, 1_000)).await.unwrap();
        // A second process on the same file is refused while this one runs.
        let second = open(&path, 100, 100, UnixMillis(1_500)).unwrap_err();
        assert_eq!(second.kind(), std::io::ErrorKind::WouldBlock);
        // A crash now (no save): the next start warms up.
        drop(held);
        let (c2, kind, held) = open(&path, 100, 100, UnixMillis(2_000)).unwrap();
        assert_eq!((kind, c2.remembers_since()), (StartKind::Unclean, Some(UnixMillis(2_000))));
        // Clean shutdown of that one, then a restart: its entries and its
        // horizon come back.
        c2.check_and_insert(entry(2, 9_000, 2_000)).await.unwrap();
        save(&c2, &path, UnixMillis(3_000)).unwrap();
        drop(held);
        let (c3, kind, held) = open(&path, 100, 100, UnixMillis(4_000)).unwrap();
        assert_eq!((kind, c3.remembers_since()), (StartKind::Restored(1), Some(UnixMillis(2_000))));
        assert_eq!(c3.check_and_insert(entry(2, 9_000, 4_000)).await, Err(ReplayRefusal::Replay));
        // It is "running" again: a crash of c3 is detected.
        drop(held);
        let (_, kind, _held) = open(&path, 100, 100, UnixMillis(5_000)).unwrap();
        assert_eq!(kind, StartKind::Unclean);
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn a_damaged_file_means_warm_up_never_trust() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay.state");
        let good = encode(CLEAN, None, &[([7; 16], UnixMillis(10))]);
        for bad in [&good[..good.len() - 1], &good[1..], b"".as_slice()] {
            std::fs::write(&path, bad).unwrap();
            let (c, kind, _held) = open(&path, 100, 100, UnixMillis(5)).unwrap();
            assert_eq!((kind, c.remembers_since()), (StartKind::Unclean, Some(UnixMillis(5))));
        }
        // More entries than the cache holds: refused, not truncated.
        let big = encode(CLEAN, None, &[([1; 16], UnixMillis(10)), ([2; 16], UnixMillis(10))]);
        std::fs::write(&path, big).unwrap();
        assert_eq!(open(&path, 1, 1, UnixMillis(5)).unwrap().1, StartKind::Unclean);
        // Entries that fit the file's count but not the cache's shards: not
        // trusted either.
        let crowded: Vec<_> = (0..40u8).map(|i| ([i.wrapping_mul(32); 16], UnixMillis(10))).collect();
        std::fs::write(&path, encode(CLEAN, None, &crowded)).unwrap();
        assert_eq!(open(&path, 40, 40, UnixMillis(5)).unwrap().1, StartKind::Unclean);
    }
}
