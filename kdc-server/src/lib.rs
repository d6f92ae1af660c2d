//! The key distribution center of the HTTP ticket authority: the ticket
//! exchanges as plain functions ([`Kdc`]), their HTTP glue ([`http::app`]),
//! the principal store ([`store`]), the audit trail ([`audit`]), request ids
//! and the request log ([`request`]) and the `kdc` command ([`cli`]).
//!
//! Booting a KDC in-process on a fresh store:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use kdc_server::{Kdc, http, master_key::MasterKey, store::SqliteStore};
//! use kdc_proto::{Clock, SecretKey, SystemClock};
//!
//! let dir = std::env::temp_dir().join("kdc-demo");
//! std::fs::create_dir_all(&dir)?;
//! let store = Arc::new(SqliteStore::open(&dir.join("kdc.sqlite3")).await?);
//! let master_bytes = SecretKey::generate();
//! let master = MasterKey::new(master_bytes.clone());
//! let realm = "EXAMPLE.TEST".parse()?;
//! let now = SystemClock.now().as_secs();
//! Kdc::initialize(store.as_ref(), &master, &realm, "an admin password".to_owned().into(), now).await?;
//! let kdc = Kdc::open(store, MasterKey::new(master_bytes), Default::default(), Default::default(), SystemClock.now()).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let public_url = kdc_server::config::advertised_base_url(None, listener.local_addr()?, false)?;
//! let state = http::AppState::new(Arc::new(kdc), Arc::new(SystemClock), public_url, None).await?;
//! http::serve(listener, state, std::future::pending()).await?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod admin;
pub mod admin_client;
pub mod audit;
pub mod cli;
pub mod config;
pub mod cors;
pub mod data_dir;
pub mod error;
pub mod exchange;
pub mod http;
pub mod kdc;
pub mod master_key;
pub mod password_policy;
pub mod policy;
pub mod principals;
pub mod request;
pub mod signing_keys;
pub mod store;
pub mod throttle;
pub mod throttle_redis;

pub use error::{ApiError, KdcError};
pub use kdc::Kdc;
