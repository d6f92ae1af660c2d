//! A service behind [`TicketAuthLayer`]: `GET /hello` answers
//! `hello, <principal>` to any client with a valid ticket for this service.
//!
//! ```sh
//! hello_service --keytab hello.keytab --kdc http://127.0.0.1:8088 --listen 127.0.0.1:8080
//! # over TLS, with a KDC whose certificate comes from a private CA:
//! hello_service --keytab hello.keytab --kdc https://kdc.example.test --kdc-ca-cert ca.pem \
//!     --tls-cert hello.pem --tls-key hello.key --listen 0.0.0.0:8443
//! # several instances sharing one replay cache:
//! hello_service --keytab hello.keytab --kdc http://127.0.0.1:8088 --redis-url redis://127.0.0.1:6379
//! ```
//!
//! `SIGHUP` reloads the TLS certificate and key without dropping connections.

use std::time::Duration;

use anyhow::Context as _;
use auth_middleware::ServeLimits;
use auth_middleware::ServerTls;
use auth_middleware::{AuthenticatedPrincipal, TicketAuthLayer};
use axum::Router;
use axum::routing::get;
use clap::Parser;

/// Command line.
#[derive(Debug, Parser)]
#[command(name = "hello_service", about = "GET /hello behind the ticket layer")]
struct Args {
    /// The service's keytab (`kdc keytab export`); re-read when it changes.
    #[arg(long)]
    keytab: std::path::PathBuf,
    /// The KDC's base URL (its discovery document names the signing keys).
    #[arg(long)]
    kdc: String,
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Where the replay cache is kept across restarts (saved at a clean
    /// shutdown; after a crash, authenticators from before the restart's
    /// skew window are refused as stale). Defaults to the keytab's path with
    /// `.replay-state` appended.
    #[arg(long)]
    replay_state: Option<std::path::PathBuf>,
    /// Share the replay cache with this service's other instances in the
    /// Redis at this URL (`redis://host:port[/db]`): a replay at a sibling
    /// instance is refused too. Replaces --replay-state. An unreachable
    /// Redis makes requests fail closed (503 + Retry-After) until it is back.
    #[arg(long, conflicts_with = "replay_state")]
    redis_url: Option<String>,
    /// Allowed clock skew for authenticators, seconds: how far a client's
    /// clock may be from this service's. Also how long replayed
    /// authenticators are remembered, and the warm-up after an unclean stop.
    #[arg(long, default_value_t = 300)]
    max_skew: u64,
    /// Serve https with this PEM certificate chain (leaf first); reloaded on SIGHUP.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// A PEM file of certificate authorities to trust (besides the
    /// platform's roots) for the KDC's discovery document and JWK set.
    #[arg(long)]
    kdc_ca_cert: Option<std::path::PathBuf>,
}

async fn hello(who: AuthenticatedPrincipal) -> String {
    format!("hello, {}\n", who.name())
}

/// The KDC's `jwks_uri`, from its discovery document (fetched under the same
/// rules as the keys: https, or http to loopback; bounded; no redirects).
async fn jwks_uri(kdc: &str, roots: &[reqwest::Certificate]) -> anyhow::Result<String> {
    let http = reqwest::Client::builder()
        .tls_certs_merge(roots.iter().cloned())
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    Ok(auth_middleware::discover_jwks_uri(&http, kdc, true).await?.to_string())
}

// `pub(crate)`: the end-to-end tests build this same file as a binary of
// their own package (`tests/src/bin/hello-under-test.rs`) and call it.
#[tokio::main]
pub(crate) async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").with_writer(std::io::stderr).init();
    let args = Args::parse();
    let roots = match &args.kdc_ca_cert {
        Some(path) => auth_middleware::load_ca_file(path)?,
        None => Vec::new(),
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(std::sync::Arc::new(ServerTls::from_pem_files(cert, key)?)),
        _ => None,
    };
    let jwks = jwks_uri(&args.kdc, &roots).await.with_context(|| format!("discovering the KDC at {}", args.kdc))?;
    let replay_state = args.replay_state.clone().unwrap_or_else(|| {
        let mut p = args.keytab.clone().into_os_string();
        p.push(".replay-state");
        p.into()
    });
    let mut builder = TicketAuthLayer::builder().keytab_file(&args.keytab);
    builder = match &args.redis_url {
        Some(url) => builder.redis_replay_cache(url),
        None => builder.replay_state_file(replay_state),
    };
    let auth = builder
        .max_clock_skew(Duration::from_secs(args.max_skew))
        .keytab_reload_interval(Duration::from_secs(30))
        .kdc_jwks_uri(jwks)
        // A KDC on this machine may serve plain http; anywhere else, https only.
        .jwks_allow_loopback_http(true)
        .kdc_ca_certificates(roots)
        .build()
        .await?;
    let service = auth.verifier().service();
    let app = Router::new().route("/hello", get(hello)).layer(auth.clone());
    let listener =
        tokio::net::TcpListener::bind(&args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("hello_service for {service} on {scheme}://{}", listener.local_addr()?);
    let stopped = match &tls {
        Some(tls) => {
            let _reloader = tls.reload_on_sighup()?;
            auth_middleware::serve_tls(listener, app, ServeLimits::default(), tls, shutdown_signal()).await?
        }
        None => auth_middleware::serve(listener, app, ServeLimits::default(), shutdown_signal()).await?,
    };
    if stopped.drained {
        // Every request has been answered: what the cache holds is final.
        auth.save_replay_state().context("saving the replay cache")?;
    } else {
        // Leave the state file saying "running": the next start warms up.
        eprintln!("requests were still open at shutdown: the replay cache is not saved");
    }
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = tokio::signal::ctrl_c() => {}, () = term => {} }
}
