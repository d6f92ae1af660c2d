//! Sealed objects (JWE compact, `dir` + `A256GCM`): framing, strict base64url,
//! the protected header, then opening under every fixed key as every usage.
//! Whatever fails to open fails with the one opaque error, and an object
//! opens only as the usage its header names.
#![no_main]

use kdc_proto::SealedObject;
use kdc_proto::limits::MAX_SEALED_LEN;
use kdc_proto::{ProtoError, SealedTicket};
use kdc_proto::{long_term_kid, parse_long_term_kid};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else { return };
    if let Ok(obj) = SealedObject::parse(token, MAX_SEALED_LEN) {
        for key in &kdc_fuzz::all_keys() {
            for usage in kdc_fuzz::USAGES {
                match obj.open(key, usage) {
                    Ok(_) => assert_eq!(usage, obj.usage(), "opened as a usage its header does not name"),
                    Err(e) => assert_eq!(e, ProtoError::Crypto, "a failed open must be opaque"),
                }
            }
        }
    }
    if let Ok(ticket) = SealedTicket::parse(token) {
        // The key id names the service and key version the ticket claims;
        // printing them back gives the same key id.
        let kid = long_term_kid(&ticket.service, ticket.kvno);
        assert_eq!(parse_long_term_kid(&kid), Ok((ticket.service.clone(), ticket.kvno)));
        assert_eq!(kid, ticket.sealed.kid(), "two spellings of one key id");
    }
});
