//! Per-request bookkeeping: a request id for every request (the caller's
//! `X-Request-Id` when it is sane, else a fresh one), echoed in the answer's
//! `X-Request-Id` and in every problem's `instance`, handed to handlers (and
//! so to audit events) in a [`RequestContext`], and exactly one log line per
//! request once it is answered.
//!
//! (The test `a_sane_request_id_is_echoed` below shows it end to end.)

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, header, request::Parts};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kdc_proto::b64;
use serde_json::Value;
use tracing::Instrument as _;

use crate::api_error::ApiError;
use crate::error::KdcError;

/// The request and response header carrying the request id.
pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest request id taken from a caller.
pub(crate) const MAX_REQUEST_ID_LEN: usize = 64;

/// What a problem's `instance` starts with; the request id follows.
pub(crate) const INSTANCE_PREFIX: &str = "urn:kdc-http:request:";

/// Largest problem body rewritten to carry `instance` (the KDC's own are a
/// few hundred bytes).
const MAX_PROBLEM_BYTES: usize = 16 * 1024;

/// A request id: 1 to [`MAX_REQUEST_ID_LEN`] of `A-Z a-z 0-9 - . _ ~ : + = /`,
/// so it can go in a header, a log line and a URN as it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct RequestId(String);

impl RequestId {
    /// A fresh id: 16 random bytes, base64url (22 characters).
    pub(crate) fn generate() -> Self {
        let mut bytes = [0u8; 16];
        rand::fill(&mut bytes[..]);
        Self(b64::encode(bytes))
    }

    /// `s` as a request id, if it is one.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let ok = (1..=MAX_REQUEST_ID_LEN).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~:+=/".contains(&b));
        ok.then(|| Self(s.to_owned()))
    }

    /// The id from the request's `X-Request-Id` (one header, sane), else a
    /// fresh one. A caller's id is a correlation aid, not an identity: it
    /// is kept so a proxy's or client's logs line up with the KDC's.
    pub(crate) fn for_request(headers: &axum::http::HeaderMap) -> Self {
        let mut given = headers.get_all(&X_REQUEST_ID).iter();
        match (given.next(), given.next()) {
            (Some(v), None) => v.to_str().ok().and_then(Self::parse).unwrap_or_else(Self::generate),
            _ => Self::generate(),
        }
    }

    /// The id.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// The `instance` of a problem answering this request.
    pub(crate) fn instance(&self) -> String {
        format!("{INSTANCE_PREFIX}{}", self.0)
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What [`track`] learnt about a request before any handler ran.
#[derive(Debug, Clone)]
pub(crate) struct RequestContext {
    /// Its id.
    pub id: RequestId,
    /// The client address: the peer, or behind a trusted proxy the address
    /// it forwarded for ([`client_address`]). `None` without
    /// connect info (router tests driven by `oneshot`).
    pub client: Option<IpAddr>,
}

impl RequestContext {
    /// `event` with this request's id and client address.
    pub(crate) fn stamp(&self, event: crate::audit::AuditEvent) -> crate::audit::AuditEvent {
        event.request(self.id.as_str(), self.client)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestContext {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Self>()
            .cloned()
            // Only a router built without [`track`] gets here: a wiring bug.
            .ok_or_else(|| KdcError::Internal("the request-tracking layer is not installed").into())
    }
}

/// What [`track`] needs: the proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone)]
pub(crate) struct RequestTracking {
    trusted_proxies: Arc<[IpAddr]>,
}

impl RequestTracking {
    /// Tracking that believes `X-Forwarded-For` from `trusted_proxies` only.
    pub(crate) fn new(trusted_proxies: &[IpAddr]) -> Self {
        Self { trusted_proxies: trusted_proxies.into() }
    }
}

/// The outermost middleware: gives the request its [`RequestContext`], runs
/// it inside a `request` span (so any log line it causes names its id),
/// then puts the id in the answer (`X-Request-Id`, a problem's `instance`)
/// and logs one line: method, path (never the query), status, latency,
/// request id and client address. Never a header or a body: they carry
/// tickets, authenticators and sealed secrets.
pub(crate) async fn track(State(t): State<RequestTracking>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = RequestId::for_request(req.headers());
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let client = peer.map(|p| client_address(p, req.headers(), &t.trusted_proxies));
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    req.extensions_mut().insert(RequestContext { id: id.clone(), client });
    let span = tracing::info_span!("request", request_id = %id);
    let resp = next.run(req).instrument(span).await;
    let mut resp = with_instance(resp, &id).await;
    if let Ok(v) = HeaderValue::from_str(id.as_str()) {
        resp.headers_mut().insert(X_REQUEST_ID, v);
    }
    let client = client.map_or_else(|| "-".to_owned(), |c| c.to_string());
    tracing::info!(
        method = %method,
        path = %path,
        status = resp.status().as_u16(),
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        request_id = %id,
        client = %client,
        "request"
    );
    resp
}

/// `map_response` for routes whose answers are signed inside the router
/// (the admin API's mutual reply covers the body): puts `instance` in a
/// problem before the signature is made. [`track`] does it for the rest.
pub(crate) async fn problem_instance(ctx: RequestContext, resp: Response) -> Response {
    with_instance(resp, &ctx.id).await
}

fn is_problem(resp: &Response) -> bool {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|ct| ct.trim().eq_ignore_ascii_case("application/problem+json"))
}

/// Adds `"instance": "urn:kdc-http:request:<id>"` to a problem+json answer
/// that has none. Answers carrying a mutual reply are left alone: their body
/// is signed, and [`problem_instance`] already did it before the signing.
async fn with_instance(resp: Response, id: &RequestId) -> Response {
    if !is_problem(&resp) || resp.headers().contains_key(auth_middleware::AUTHENTICATION_INFO) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_PROBLEM_BYTES).await else {
        // Not one of ours (they are small and in memory): the body is gone,
        // so answer with the generic problem rather than a cut one.
        let mut fixed = ApiError::from(KdcError::Internal("an unreadable problem body")).into_response();
        fixed.headers_mut().remove(header::CONTENT_LENGTH);
        return fixed;
    };
    let rewritten = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(mut m)) if !m.contains_key("instance") => {
            m.insert("instance".to_owned(), Value::String(id.instance()));
            serde_json::to_vec(&m).ok()
        }
        _ => None,
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(rewritten.unwrap_or_else(|| bytes.to_vec())))
}

/// Most `X-Forwarded-For` entries walked through trusted proxies.
const MAX_FORWARDED_HOPS: usize = 16;

/// The client behind `peer`: `peer` itself unless it is one of `trusted`;
/// then the rightmost `X-Forwarded-For` entry (across all such headers, in
/// order) that is not a trusted proxy. Entries left of that one are whatever
/// the client chose to send and are never read. When the walk meets an entry
/// that is not an address, or only trusted proxies, or more than
/// [`MAX_FORWARDED_HOPS`] of them, the client is the last trusted hop: the
/// request is then counted under a proxy's address, never under one the
/// client picked.
pub(crate) fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    let is_trusted = |a: IpAddr| trusted.iter().any(|t| t.to_canonical() == a.to_canonical());
    if !is_trusted(peer) {
        return peer;
    }
    let entries = headers
        .get_all("x-forwarded-for")
        .iter()
        .rev()
        // A value that is not text yields one entry that is not an address.
        .flat_map(|v| v.to_str().unwrap_or("").rsplit(','));
    let mut client = peer;
    for entry in entries.take(MAX_FORWARDED_HOPS) {
        let entry = entry.trim();
        // Some proxies append a port: `192.0.2.7:5555`, `[2001:db8::7]:5555`.
        let addr = entry.parse::<IpAddr>().ok().or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()));
        match addr {
            Some(a) if is_trusted(a) => client = a,
            Some(a) => return a,
            None => return client,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt as _;

    #[tokio::test]
    async fn a_sane_request_id_is_echoed() {
        let app = Router::new()
            .route("/", get(|ctx: RequestContext| async move { ctx.id.to_string() }))
            .layer(axum::middleware::from_fn_with_state(RequestTracking::new(&[]), track));
        let req =
            axum::http::Request::builder().uri("/").header("x-request-id", "abc-123").body(Body::empty()).unwrap();
        let resp = app.oneshot(req).await.unwrap();
        assert_eq!(resp.headers()["x-request-id"], "abc-123");
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn x_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy() {
        let h = forwarded(&["203.0.113.7"]);
        assert_eq!(client_address(ip("192.0.2.1"), &h, &[]), ip("192.0.2.1"));
        assert_eq!(client_address(ip("192.0.2.1"), &h, &[ip("10.0.0.1")]), ip("192.0.2.1"));
        assert_eq!(client_address(ip("10.0.0.1"), &h, &[ip("10.0.0.1")]), ip("203.0.113.7"));
        assert_eq!(client_address(ip("::ffff:10.0.0.1"), &h, &[ip("10.0.0.1")]), ip("203.0.113.7"));
    }

    #[test]
    fn the_rightmost_untrusted_entry_is_the_client() {
        let trusted = [ip("10.0.0.1"), ip("10.0.0.2")];
        let peer = ip("10.0.0.1");
        // The client sent a spoofed entry; the proxies appended what they saw.
        let h = forwarded(&["198.51.100.1, 203.0.113.7", "10.0.0.2"]);
        assert_eq!(client_address(peer, &h, &trusted), ip("203.0.113.7"));
        let h = forwarded(&["198.51.100.1,203.0.113.7:5555, 10.0.0.2"]);
        assert_eq!(client_address(peer, &h, &trusted), ip("203.0.113.7"));
        let h = forwarded(&["[2001:db8::7]:5555"]);
        assert_eq!(client_address(peer, &h, &trusted), ip("2001:db8::7"));
    }

    #[test]
    fn garbage_missing_or_endless_entries_count_under_the_last_trusted_hop() {
        let trusted = [ip("10.0.0.1"), ip("10.0.0.2")];
        let peer = ip("10.0.0.1");
        assert_eq!(client_address(peer, &HeaderMap::new(), &trusted), peer);
        assert_eq!(client_address(peer, &forwarded(&["203.0.113.7, unknown"]), &trusted), peer);
        assert_eq!(client_address(peer, &forwarded(&["203.0.113.7, 10.0.0.2, "]), &trusted), peer);
        assert_eq!(client_address(peer, &forwarded(&["10.0.0.2"]), &trusted), ip("10.0.0.2"));
        let endless = vec!["10.0.0.2"; 100].join(",");
        let h = forwarded(&[&format!("203.0.113.7,{endless}")]);
        assert_eq!(client_address(peer, &h, &trusted), ip("10.0.0.2"));
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", axum::http::HeaderValue::from_bytes(b"203.0.113.\xff").unwrap());
        assert_eq!(client_address(peer, &h, &trusted), peer);
    }

    #[test]
    fn request_ids_are_bounded_tokens() {
        for ok in ["abc", "0f8fad5b-d9cb-469f-a165-70867728950e", "a.b_c~d:e+f=g/h", &"x".repeat(64)] {
            assert_eq!(RequestId::parse(ok).map(|r| r.0), Some(ok.to_owned()), "{ok}");
        }
        for bad in ["", &"x".repeat(65), "a b", "a\"b", "a\nb", "é", "a;b", "a,b", "<script>"] {
            assert!(RequestId::parse(bad).is_none(), "{bad:?}");
        }
        let g = RequestId::generate();
        assert_eq!(g.as_str().len(), 22);
        assert!(RequestId::parse(g.as_str()).is_some());
        assert_ne!(g, RequestId::generate());
    }

    async fn answer(app: Router, headers: &[(&str, &str)]) -> (Response, Value) {
        let mut req = Request::builder().uri("/x?secret=1");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (Response::from_parts(parts, Body::empty()), v)
    }

    fn app() -> Router {
        Router::new()
            .route(
                "/x",
                get(|ctx: RequestContext| async move { ApiError::from(KdcError::Malformed(ctx.id.to_string())) }),
            )
            .route("/ok", get(|| async { "fine" }))
            .layer(axum::middleware::from_fn_with_state(RequestTracking::new(&[]), track))
    }

    #[tokio::test]
    async fn a_sane_id_is_echoed_in_the_header_the_handler_and_the_problem() {
        let (resp, body) = answer(app(), &[("x-request-id", "req-42")]).await;
        assert_eq!(resp.headers()["x-request-id"], "req-42");
        assert_eq!(body["instance"], "urn:kdc-http:request:req-42");
        assert_eq!(body["detail"], "malformed request: req-42");
        assert_eq!(body["type"], "urn:kdc-http:problem:malformed-request");
    }

    #[tokio::test]
    async fn an_insane_or_repeated_id_is_replaced() {
        for headers in [
            vec![("x-request-id", "has space")],
            vec![("x-request-id", "a"), ("x-request-id", "b")],
            vec![("x-request-id", "")],
            vec![],
        ] {
            let (resp, body) = answer(app(), &headers).await;
            let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
            assert_eq!(id.len(), 22, "{headers:?}");
            assert_eq!(body["instance"], format!("urn:kdc-http:request:{id}"));
        }
    }

    #[tokio::test]
    async fn success_answers_get_the_header_and_keep_their_body() {
        let req = Request::builder().uri("/ok").body(Body::empty()).unwrap();
        let resp = app().oneshot(req).await.unwrap();
        assert!(resp.headers().contains_key("x-request-id"));
        let bytes = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
        assert_eq!(&bytes[..], b"fine");
    }

    #[tokio::test]
    async fn a_signed_problem_is_left_as_it_is() {
        let signed = Router::new()
            .route(
                "/x",
                get(|| async {
                    let mut r = ApiError::from(KdcError::PrincipalNotFound).into_response();
                    r.headers_mut()
                        .insert(auth_middleware::AUTHENTICATION_INFO, HeaderValue::from_static("mutual=\"x\""));
                    r
                }),
            )
            .layer(axum::middleware::from_fn_with_state(RequestTracking::new(&[]), track));
        let (_, body) = answer(signed, &[]).await;
        assert!(body.get("instance").is_none(), "{body}");
    }

    #[tokio::test]
    async fn without_the_layer_the_context_is_a_500_not_a_panic() {
        let bare = Router::new().route("/x", get(|_: RequestContext| async { "unreachable" }));
        let req = Request::builder().uri("/x").body(Body::empty()).unwrap();
        assert_eq!(bare.oneshot(req).await.unwrap().status(), 500);
    }
}
