//! Ticket claims: the JSON the KDC signs (serde round trip), then the whole
//! ticket path with fixed keys: sign with the KDC key, seal under the service
//! key, parse, open and check; what comes out is what went in. The raw input
//! is also tried as a JWS (only the KDC key verifies) and as a sealed ticket.
#![no_main]

use kdc_proto::{ProtoError, SealedTicket, TicketCheck, TicketClaims, UnixMillis, mint_ticket, open_ticket};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let service = kdc_fuzz::service();
    let kdc = kdc_fuzz::kdc_verifier();
    let service_key = kdc_fuzz::service_key();

    if let Ok(claims) = serde_json::from_slice::<TicketClaims>(data) {
        let json = serde_json::to_vec(&claims).expect("claims serialise");
        let again: TicketClaims = serde_json::from_slice(&json).expect("serialised claims parse");
        assert_eq!(again, claims, "claims change in a JSON round trip");

        match mint_ticket(&claims, &kdc_fuzz::kdc_signing_key(), &service_key) {
            Ok(token) => {
                let sealed = SealedTicket::parse(&token).expect("a minted ticket parses");
                assert_eq!((&sealed.service, sealed.kvno), (&claims.aud, service_key.kvno));
                let now = UnixMillis::from_secs(claims.nbf);
                let check = TicketCheck { service: &service, kdc: &kdc, now, max_skew_secs: kdc_fuzz::SKEW_SECS };
                let opened = open_ticket(&sealed, &service_key.key, &check);
                let for_us = claims.aud == service && claims.iss == *service.realm();
                let in_window = now.as_secs() == claims.nbf && claims.exp > claims.nbf;
                match opened {
                    Ok(v) => {
                        assert!(for_us, "a ticket for another service opened");
                        assert_eq!(v.claims(), &claims, "claims changed between mint and open");
                    }
                    Err(ProtoError::WrongService) => assert!(!for_us, "our own ticket refused as another's"),
                    Err(ProtoError::TicketExpired | ProtoError::TicketNotYetValid) => {
                        assert!(!(for_us && in_window), "a ticket refused inside its validity")
                    }
                    Err(e) => panic!("a freshly minted ticket failed to open: {e:?}"),
                }
            }
            Err(ProtoError::TicketTooLarge { .. }) => {}
            Err(e) => panic!("minting failed other than by size: {e:?}"),
        }
    }

    if let Ok(text) = std::str::from_utf8(data) {
        let _ = kdc.verify::<TicketClaims>(text);
        if let Ok(sealed) = SealedTicket::parse(text) {
            let check = TicketCheck { service: &service, kdc: &kdc, now: kdc_fuzz::NOW, max_skew_secs: 300 };
            for key in [&service_key.key, &kdc_fuzz::old_service_key().key] {
                let _ = open_ticket(&sealed, key, &check);
            }
        }
    }
});
