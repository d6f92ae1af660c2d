//! Keytab files as the middleware reads them (`ServiceKeyring::from_file`,
//! what `TicketAuthLayer::builder().keytab_file(..)` calls): JSON, then the
//! live keys at a fixed time. A parsed keytab survives a JSON round trip, and
//! the keyring holds exactly its live key versions.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use auth_middleware::ServiceKeyring;
use kdc_proto::Keytab;
use libfuzzer_sys::fuzz_target;

/// One scratch file per fuzzing process (see `kdc_fuzz::scratch_dir`).
fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let dir = kdc_fuzz::scratch_dir();
        let path = dir.path().join("service.keytab");
        (dir, path)
    })
    .1
}

fuzz_target!(|data: &[u8]| {
    let parsed = serde_json::from_slice::<Keytab>(data);
    if let Ok(kt) = &parsed {
        let json = serde_json::to_vec(kt).expect("a keytab serialises");
        let again: Keytab = serde_json::from_slice(&json).expect("a serialised keytab parses");
        assert_eq!(&again, kt, "keytab changes in a JSON round trip");
    }

    let path = scratch();
    std::fs::write(path, data).expect("writing the scratch keytab");
    let ring = ServiceKeyring::from_file(path, kdc_fuzz::NOW);
    assert_eq!(ring.is_ok(), parsed.as_ref().is_ok_and(|kt| ServiceKeyring::from_keytab(kt, kdc_fuzz::NOW).is_ok()));
    if let (Ok(ring), Ok(kt)) = (ring, parsed) {
        assert_eq!(ring.principal(), &kt.principal);
        for entry in &kt.keys {
            let live = entry.expires_at.is_none_or(|e| e > kdc_fuzz::NOW_SECS);
            // Several entries may name one version; then any of them may win,
            // but a live version is always there and a retired one only if
            // another entry of the same version is live.
            let any_live =
                kt.keys.iter().any(|k| k.kvno == entry.kvno && k.expires_at.is_none_or(|e| e > kdc_fuzz::NOW_SECS));
            assert_eq!(ring.key(entry.kvno).is_some(), any_live, "kvno {} live={live}", entry.kvno);
        }
    }
});
