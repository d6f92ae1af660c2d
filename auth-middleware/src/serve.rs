//! Serving an axum app with limits that keep slow or greedy clients from
//! holding the server: a deadline for each request head (which also bounds
//! how long an idle keep-alive connection stays open), a deadline for the
//! whole request, and caps on connections in total and per client address.
//!
//! `axum::serve` has none of these; a client that sends half a request line
//! and waits keeps a socket and a task forever. The KDC and the example
//! service serve through [`serve`]; any service behind the layer can too.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! let app = axum::Router::new().route("/hello", axum::routing::get(|| async { "hello" }));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let stopped = auth_middleware::serve(listener, app, Default::default(), std::future::pending()).await?;
//! # let _ = stopped;
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tower::ServiceExt as _;

use crate::tls::ServerTls;

/// Limits on what one client can hold. Every field has a safe default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServeLimits {
    /// Time allowed to send a request's head (request line and headers),
    /// counted from when the server starts waiting for it, so it also closes
    /// keep-alive connections idle this long. Defaults to 10 s.
    pub header_read_timeout: Duration,
    /// Time allowed for a whole request, body and handling included; past
    /// it the client gets `408` (or the connection is closed). Defaults to 30 s.
    pub request_timeout: Duration,
    /// Open connections from one client address; more get `503` with
    /// `Retry-After: 1` and are closed at once (over TLS they are closed
    /// without an answer: the client has not negotiated TLS yet). Defaults to 256 (a busy
    /// client behind one NAT address keeps working; one attacker holds at
    /// most this many sockets). Behind a local reverse proxy every client
    /// shares its address: raise it to `max_connections` there.
    pub max_connections_per_address: usize,
    /// Open connections in all; more wait in the listen backlog. Defaults to 10 000.
    pub max_connections: usize,
    /// How long a graceful shutdown waits for open requests. Defaults to 10 s.
    pub shutdown_grace: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections_per_address: 256,
            max_connections: 10_000,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

impl ServeLimits {
    /// Sets [`Self::header_read_timeout`].
    pub fn header_read_timeout(mut self, d: Duration) -> Self {
        self.header_read_timeout = d;
        self
    }

    /// Sets [`Self::request_timeout`].
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = d;
        self
    }

    /// Sets [`Self::max_connections_per_address`].
    pub fn max_connections_per_address(mut self, n: usize) -> Self {
        self.max_connections_per_address = n;
        self
    }

    /// Sets [`Self::shutdown_grace`].
    pub fn shutdown_grace(mut self, d: Duration) -> Self {
        self.shutdown_grace = d;
        self
    }

    /// Sets [`Self::max_connections`].
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }
}

/// Open connections per client address.
#[derive(Debug, Default)]
struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

/// One counted connection; uncounted when dropped.
struct Slot {
    table: Arc<PerAddress>,
    ip: IpAddr,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl PerAddress {
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize, permit: tokio::sync::OwnedSemaphorePermit) -> Option<Slot> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot { table: self.clone(), ip, _permit: permit })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.table.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// How serving ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "save state that requests change (a replay cache) only when drained"]
pub struct Stopped {
    /// Every connection ended within the grace period: no request is still
    /// being handled, so what the handlers' state holds is final.
    pub drained: bool,
}

/// Serves `app` on `listener` within `limits` until `shutdown` completes,
/// then lets open requests finish (up to [`ServeLimits::shutdown_grace`]).
/// Handlers see the peer as `ConnectInfo<SocketAddr>`, as with
/// `into_make_service_with_connect_info`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<Stopped> {
    serve_inner(listener, app, limits, None, shutdown).await
}

/// [`serve`] over TLS: every connection is a TLS handshake first, within
/// [`ServeLimits::header_read_timeout`] (a client that stalls the handshake
/// is cut off like one that stalls its request head). The certificate is
/// the one `tls` serves at each handshake, so a [`ServerTls::reload`]
/// applies to new connections without dropping open ones.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: ServeLimits,
    tls: &ServerTls,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<Stopped> {
    serve_inner(listener, app, limits, Some(tls.acceptor()), shutdown).await
}

async fn serve_inner(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: ServeLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<Stopped> {
    let app = app.layer(tower_http::timeout::TimeoutLayer::with_status_code(
        axum::http::StatusCode::REQUEST_TIMEOUT,
        limits.request_timeout,
    ));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let per_address = Arc::new(PerAddress::default());
    let total = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    // Tells TLS handshakes still in progress that serving has stopped: a
    // stalled handshake must not hold a graceful shutdown.
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            p = total.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: back off, do not spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = per_address.take(address_group(peer.ip()), limits.max_connections_per_address, permit) else {
            tracing::debug!(peer = %peer.ip(), "connection refused: too many from this address");
            // Over TLS the client would not understand a plain answer; it
            // just sees the connection closed.
            if tls.is_none() {
                tokio::spawn(refuse(stream));
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = app.clone().map_request(move |mut req: axum::extract::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            req
        });
        let service = TowerToHyperService::new(service);
        // The watcher keeps a graceful shutdown waiting for a handshake in
        // progress too; the handshake itself is bounded.
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let tls = tls.clone();
        let handshake_timeout = limits.header_read_timeout;
        let mut stopping = stopping.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let ended = match tls {
                None => watcher.watch(builder.serve_connection(TokioIo::new(stream), service)).await,
                Some(acceptor) => {
                    let handshake = tokio::select! {
                        h = tokio::time::timeout(handshake_timeout, acceptor.accept(stream)) => h,
                        _ = stopping.wait_for(|stop| *stop) => return,
                    };
                    match handshake {
                        Ok(Ok(tls_stream)) => {
                            watcher.watch(builder.serve_connection(TokioIo::new(tls_stream), service)).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %peer.ip(), error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(peer = %peer.ip(), "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = stopping_tx.send(true);
    let drained = tokio::time::timeout(limits.shutdown_grace, graceful.shutdown()).await.is_ok();
    if !drained {
        tracing::warn!("open connections did not finish within the shutdown grace period");
    }
    Ok(Stopped { drained })
}

/// What counts as one client address for the per-address cap: an IPv4
/// address, or an IPv6 /64 (one host usually holds a whole /64).
fn address_group(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Answers a connection over its address's cap with `503` and closes it,
/// giving the peer at most a second to take the answer.
async fn refuse(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt as _;
    const ANSWER: &[u8] =
        b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(ANSWER)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn start(limits: ServeLimits) -> SocketAddr {
        let app = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { serve(listener, app, limits, std::future::pending()).await.map(|_| ()) });
        addr
    }

    /// Reads until the peer closes; `None` if it is still open after `wait`.
    async fn closed_within(sock: &mut tokio::net::TcpStream, wait: Duration) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        tokio::time::timeout(wait, sock.read_to_end(&mut out)).await.ok().map(|_| out)
    }

    #[tokio::test]
    async fn half_a_request_head_is_cut_off() {
        let addr = start(ServeLimits::default().header_read_timeout(Duration::from_millis(300))).await;
        let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        sock.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        assert!(closed_within(&mut sock, Duration::from_secs(3)).await.is_some(), "slow head kept open");
    }

    #[tokio::test]
    async fn an_idle_keep_alive_connection_is_closed() {
        let addr = start(ServeLimits::default().header_read_timeout(Duration::from_millis(300))).await;
        let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        sock.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let out = closed_within(&mut sock, Duration::from_secs(3)).await.expect("idle connection kept open");
        assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
    }

    #[tokio::test]
    async fn one_address_cannot_take_every_connection() {
        let addr = start(ServeLimits::default().max_connections_per_address(3)).await;
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        // Let the server count them.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut fourth = tokio::net::TcpStream::connect(addr).await.unwrap();
        let out = closed_within(&mut fourth, Duration::from_secs(2)).await.expect("fourth connection served");
        assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 503"));
        // Once one closes, there is room again.
        drop(held.pop());
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut again = tokio::net::TcpStream::connect(addr).await.unwrap();
        again.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let out = closed_within(&mut again, Duration::from_secs(3)).await.unwrap();
        assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
    }
}

#[cfg(test)]
mod tls_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A client that opens a connection and never starts its TLS handshake
    /// must not keep a graceful shutdown waiting for the handshake deadline.
    #[tokio::test]
    async fn a_stalled_handshake_does_not_hold_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap().self_signed(&key).unwrap();
        std::fs::write(dir.path().join("c.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("k.pem"), key.serialize_pem()).unwrap();
        let tls = ServerTls::from_pem_files(dir.path().join("c.pem"), dir.path().join("k.pem")).unwrap();
        let app = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        // The default handshake deadline is 10 s.
        let server = tokio::spawn(async move {
            serve_tls(listener, app, ServeLimits::default(), &tls, async {
                let _ = stopped.await;
            })
            .await
        });
        let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let asked = std::time::Instant::now();
        stop.send(()).unwrap();
        let outcome = tokio::time::timeout(Duration::from_secs(5), server).await;
        let stopped = outcome.expect("shutdown waited for the stalled handshake").unwrap().unwrap();
        assert!(stopped.drained);
        assert!(asked.elapsed() < Duration::from_secs(5));
    }
}

#[cfg(test)]
mod group_tests {
    use super::*;

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let g = |s: &str| address_group(s.parse().unwrap());
        assert_eq!(g("2001:db8:1:2:aaaa::1"), g("2001:db8:1:2:bbbb::2"));
        assert_ne!(g("2001:db8:1:2::1"), g("2001:db8:1:3::1"));
        assert_eq!(g("::ffff:10.0.0.1"), g("10.0.0.1"));
        assert_ne!(g("10.0.0.1"), g("10.0.0.2"));
    }
}
