//! The KDC's JSON request bodies, as its handlers deserialise them: the three
//! ticket exchanges (each with a JSON round trip) and the admin API's bodies
//! (create, update, rotate).
#![no_main]

use kdc_proto::{InitialTicketRequest, RenewRequest, ServiceTicketRequest};
use kdc_server::{CreatePrincipal, RotateRequest, UpdatePrincipal};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(v) = serde_json::from_slice::<T>(data) {
        let json = serde_json::to_vec(&v).expect("a request serialises");
        let again: T = serde_json::from_slice(&json).expect("a serialised request parses");
        assert_eq!(again, v, "request changes in a JSON round trip");
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<InitialTicketRequest>(data);
    round_trip::<ServiceTicketRequest>(data);
    round_trip::<RenewRequest>(data);
    let _ = serde_json::from_slice::<CreatePrincipal>(data);
    let _ = serde_json::from_slice::<UpdatePrincipal>(data);
    let _ = serde_json::from_slice::<RotateRequest>(data);
});
