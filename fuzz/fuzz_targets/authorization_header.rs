//! `Authorization: Ticket ticket="…", authenticator="…"` as a service reads
//! it: the header parser (with a round trip through the SDK's encoder), then
//! the first half of request validation with fixed keys (ticket framing, key
//! choice, seal, KDC signature, validity, authenticator seal, client and time).
#![no_main]

use auth_middleware::parse_authorization;
use kdc_proto::authorization_value;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // An HTTP header value reaches the parser only as text.
    let Ok(value) = std::str::from_utf8(data) else { return };
    if let Ok(creds) = parse_authorization(value) {
        let again = authorization_value(creds.ticket, creds.authenticator);
        assert_eq!(parse_authorization(&again), Ok(creds), "re-encoded header parses differently");
    }
    let _ = kdc_fuzz::ticket_verifier().open(Some(value), kdc_fuzz::NOW);
});
