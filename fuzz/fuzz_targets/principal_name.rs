//! Principal names and realms: `FromStr`, the bare-name form the `kdc`
//! command reads, and key ids (`PRINCIPAL#KVNO`). Whatever parses prints
//! back to the same text (one spelling per name) and parses again equal.
#![no_main]

use kdc_proto::limits::MAX_PRINCIPAL_LEN;
use kdc_proto::{Kvno, Principal, Realm};
use kdc_proto::{long_term_kid, parse_long_term_kid};
use libfuzzer_sys::fuzz_target;

fn round_trips(p: &Principal) {
    let shown = p.to_string();
    assert!(shown.len() <= MAX_PRINCIPAL_LEN, "a name over the length bound parsed");
    assert_eq!(shown.parse::<Principal>().as_ref(), Ok(p), "display then parse differs");
    assert_eq!(Principal::new(p.name(), p.instance(), p.realm().clone()).as_ref(), Ok(p));
    let json = serde_json::to_string(p).expect("a principal serialises");
    assert_eq!(serde_json::from_str::<Principal>(&json).as_ref().ok(), Some(p));
    for kvno in [Kvno(0), Kvno(1), Kvno(u32::MAX)] {
        assert_eq!(parse_long_term_kid(&long_term_kid(p, kvno)), Ok((p.clone(), kvno)));
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(p) = s.parse::<Principal>() {
        assert_eq!(p.to_string(), s, "two spellings of one principal");
        round_trips(&p);
    }
    if let Ok(r) = s.parse::<Realm>() {
        assert_eq!(r.as_str(), s);
        assert_eq!(r.to_string().parse::<Realm>().as_ref(), Ok(&r));
    }
    if let Ok(p) = Principal::parse_with_default_realm(s, &kdc_fuzz::realm()) {
        round_trips(&p);
    }
    if let Ok((p, kvno)) = parse_long_term_kid(s) {
        round_trips(&p);
        assert_eq!(long_term_kid(&p, kvno), s, "two spellings of one key id");
    }
});
