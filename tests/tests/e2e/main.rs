//! End-to-end tests: real KDCs on ephemeral loopback ports, driven over HTTP.
//! One test binary; each module covers one area.

// Test code: a panic is how a test fails.
#![allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin;
mod admin_hardening;
mod advertised_urls;
mod attacks;
mod audit_trail;
mod configuration_doc;
mod contract;
mod cors;
mod durability;
mod exchanges;
mod first_hour;
mod jwks_fetch;
mod lifecycle;
mod lockout;
mod middleware;
mod postgres_cluster;
mod raw_attacks;
mod redis_replay;
mod replay_and_binding;
mod sdk;
mod sdk_hardening;
mod sdk_services;
mod shared_throttle;
mod signing_key_rotation;
mod tls;

/// The `kdc` command under test.
pub fn kdc_bin() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_kdc-under-test"))
}
