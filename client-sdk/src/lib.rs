//! Client SDK of the HTTP ticket authority: log in to the KDC, keep tickets
//! in a cache, call services with a fresh authenticator bound to each request,
//! and verify each response's mutual reply (status and body included).
//!
//! ```no_run
//! use client_sdk::{ClientOptions, KdcClient};
//! use reqwest::Method;
//!
//! # async fn demo() -> Result<(), client_sdk::SdkError> {
//! let kdc = KdcClient::discover("http://127.0.0.1:8088", ClientOptions::default()).await?;
//! let alice = kdc.principal_name("alice")?;
//! kdc.login(&alice, "correct horse battery staple").await?;
//! let service = kdc.principal_name("HTTP/hello.example.test")?;
//! let resp = kdc.send(&service, Method::GET, "http://127.0.0.1:8080/hello", None).await?;
//! assert_eq!(resp.status, 200);
//! println!("{}", String::from_utf8_lossy(&resp.body)); // verified: came from the service, unaltered
//! kdc.logout().await?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![deny(unreachable_pub)]

mod cache;
mod client;
mod error;
mod file_cache;
mod tls;

pub use cache::{CACHE_VERSION, CacheContents, CachedDiscovery, CachedKdf, CachedTicket, MemoryCache, TicketCache};
pub use client::{
    ClientOptions, DEFAULT_MAX_RESPONSE_BODY, KdcClient, MAX_KDC_RESPONSE_BYTES, PreparedRequest, ServiceRequest,
    ServiceResponse, check_transport, load_keytab,
};
pub use error::SdkError;
pub use file_cache::FileCache;
pub use tls::load_ca_file;

/// The README's Rust examples, compiled as doc tests so they stay true.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
