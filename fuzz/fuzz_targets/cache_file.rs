//! The SDK's ticket-cache file as `FileCache` reads it (the same checks as
//! `tkt` and `KdcClient` use): JSON with a format version. Whatever it
//! accepts, it writes back and reads again unchanged.
#![no_main]

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::OnceLock;

use client_sdk::CACHE_VERSION;
use client_sdk::{FileCache, TicketCache};
use libfuzzer_sys::fuzz_target;

/// One cache per fuzzing process (see `kdc_fuzz::scratch_dir`: each
/// write-back syncs the file, which is free only in memory).
fn cache() -> &'static FileCache {
    static CACHE: OnceLock<(tempfile::TempDir, FileCache)> = OnceLock::new();
    &CACHE
        .get_or_init(|| {
            let dir = kdc_fuzz::scratch_dir();
            let cache = FileCache::new(dir.path().join("tkt/cache.json")).expect("a cache in a fresh directory");
            (dir, cache)
        })
        .1
}

fuzz_target!(|data: &[u8]| {
    let cache = cache();
    // Replace the file as another process (or an attacker with the user's
    // rights) could: mode 0600, so the owner and mode checks pass.
    let _ = std::fs::remove_file(cache.path());
    let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(cache.path()).expect("cache file");
    f.write_all(data).expect("writing the cache file");
    drop(f);

    let Ok(read) = cache.snapshot() else { return };
    // An empty file reads as an empty cache; writing stamps the version.
    let mut expected = read.clone();
    expected.version = CACHE_VERSION;
    cache.update(&mut |_| {}).expect("writing back what was read");
    assert_eq!(cache.snapshot().expect("reading back what was written"), expected, "cache changed in a round trip");
});
