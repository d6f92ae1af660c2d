//! Browser access: CORS for the origins the operator lists, nothing for
//! anyone else.
//!
//! Off by default: without allowed origins the KDC sends no
//! `Access-Control-*` header at all, and a page on another origin cannot
//! read its answers. With them, [`cors`] answers preflights and adds the
//! CORS headers, using tower-http's [`CorsLayer`] with an exact list
//! ([`AllowOrigin::list`]).
//!
//! The list is an allow-list of exact origins, never `*` and never a
//! pattern: a page's script sends the credentials itself (a ticket and an
//! authenticator in `Authorization`, a pre-authentication in the body), so
//! only pages the operator trusts with them should be able to read the
//! answers. The KDC uses no cookies, so it never sends
//! `Access-Control-Allow-Credentials`: a browser attaches nothing ambient to
//! these requests.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use tower::{Layer as _, ServiceExt as _};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// How long a browser may keep a preflight's answer: a change of the
/// allowed methods or headers reaches pages within this.
pub(crate) const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// The methods the KDC's routes use (public and `/admin`).
pub(crate) const ALLOWED_METHODS: [Method; 5] =
    [Method::GET, Method::POST, Method::PATCH, Method::DELETE, Method::OPTIONS];

/// Request headers a page may set beyond the CORS-safelisted ones: a
/// ticket and authenticator, a JSON body, a request id.
pub(crate) const ALLOWED_HEADERS: [HeaderName; 3] =
    [header::AUTHORIZATION, header::CONTENT_TYPE, HeaderName::from_static("x-request-id")];

/// Response headers a page's script may read beyond the safelisted ones:
/// challenges and refusals (`WWW-Authenticate`), the admin API's mutual
/// reply (`Authentication-Info`), throttling (`Retry-After`) and the
/// request id.
pub(crate) const EXPOSED_HEADERS: [HeaderName; 4] = [
    header::WWW_AUTHENTICATE,
    HeaderName::from_static(kdc_proto::AUTHENTICATION_INFO),
    header::RETRY_AFTER,
    HeaderName::from_static("x-request-id"),
];

/// Why a configured origin was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CORS origin {origin:?}: {reason}")]
pub struct InvalidOrigin {
    /// What was given.
    pub origin: String,
    /// Why not.
    pub reason: &'static str,
}

/// Whether a (normalised) origin is plain `http` on a host other than
/// loopback: allowed, but such a page can be rewritten in transit.
pub(crate) fn is_insecure_remote(origin: &str) -> bool {
    let Some(rest) = origin.strip_prefix("http://") else { return false };
    let host = match rest.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => rest.rsplit_once(':').map_or(rest, |(h, _)| h),
    };
    !(host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()))
}

/// Checks one configured origin and returns it as browsers send it in
/// `Origin`: `http` or `https`, a host and an optional port, in lower case,
/// without the scheme's default port. A trailing `/` is accepted; any other
/// path, a query, a fragment or user info is refused, and so are `*` and
/// `null`.
pub(crate) fn parse_origin(origin: &str) -> Result<HeaderValue, InvalidOrigin> {
    let bad = |reason| InvalidOrigin { origin: origin.to_owned(), reason };
    let text = origin.trim();
    if text == "*" {
        return Err(bad(
            "`*` is refused: requests to the KDC carry credentials (tickets, authenticators, pre-authentication), \
             so only listed origins may read its answers; list each origin, e.g. https://app.example.test",
        ));
    }
    if text.eq_ignore_ascii_case("null") {
        return Err(bad(
            "the `null` origin (sandboxed frames, file: pages, some redirects) is shared by unrelated pages; \
             list real origins",
        ));
    }
    if text.contains('#') {
        return Err(bad("an origin has no fragment: write scheme://host[:port]"));
    }
    let uri: axum::http::Uri = text.parse().map_err(|_| bad("not an origin: write scheme://host[:port]"))?;
    let scheme = match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
        Some("http") => "http",
        Some("https") => "https",
        _ => return Err(bad("the scheme must be http or https: write scheme://host[:port]")),
    };
    let authority = uri.authority().ok_or_else(|| bad("no host: write scheme://host[:port]"))?;
    if authority.as_str().contains('@') {
        return Err(bad("an origin has no user info: write scheme://host[:port]"));
    }
    let host = authority.host().to_ascii_lowercase();
    if host.is_empty() || host.contains('*') {
        return Err(bad("a host is required, and no wildcard: write scheme://host[:port]"));
    }
    if !matches!(uri.path_and_query().map(|p| p.as_str()), None | Some("" | "/")) {
        return Err(bad("an origin has no path or query: write scheme://host[:port]"));
    }
    let default_port = if scheme == "https" { 443 } else { 80 };
    let serialized = match authority.port_u16() {
        Some(port) if port != default_port => format!("{scheme}://{host}:{port}"),
        _ => format!("{scheme}://{host}"),
    };
    HeaderValue::from_str(&serialized).map_err(|_| bad("not an origin: write scheme://host[:port]"))
}

/// The origins whose pages may call the KDC. Empty (the default): no CORS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedOrigins(Vec<HeaderValue>);

impl AllowedOrigins {
    /// Checks every origin with [`parse_origin`]; duplicates (after
    /// normalisation) are kept once.
    pub fn parse<I>(origins: I) -> Result<Self, InvalidOrigin>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let mut list: Vec<HeaderValue> = Vec::new();
        for origin in origins {
            let value = parse_origin(origin.as_ref())?;
            if !list.contains(&value) {
                list.push(value);
            }
        }
        Ok(Self(list))
    }

    /// Whether no origin is allowed (CORS is off).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The origins, as browsers send them.
    pub fn origins(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|v| v.to_str().ok())
    }

    /// The CORS layer for these origins; `None` when there are none.
    pub fn layer(&self) -> Option<CorsLayer> {
        if self.is_empty() {
            return None;
        }
        Some(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(self.0.iter().cloned()))
                .allow_methods(ALLOWED_METHODS)
                .allow_headers(ALLOWED_HEADERS)
                .expose_headers(EXPOSED_HEADERS)
                .max_age(PREFLIGHT_MAX_AGE),
        )
    }
}

/// Whether `req` is a CORS preflight: `OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`.
fn is_preflight(req: &Request) -> bool {
    req.method() == Method::OPTIONS
        && req.headers().contains_key(header::ORIGIN)
        && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The KDC's CORS middleware (state: [`AllowedOrigins::layer`]). Without a
/// layer it does nothing. With one, every request goes through it except an
/// `OPTIONS` that is not a preflight, which the router answers as before
/// (`405`): tower-http's layer would answer any `OPTIONS` with an empty
/// `200`. It must sit outside the admin layer, since a preflight carries no
/// ticket, and outside `uniform_errors`, so that refusals carry the CORS
/// headers a page needs to read them.
pub(crate) async fn cors(State(layer): State<Option<CorsLayer>>, req: Request, next: Next) -> Response {
    let Some(layer) = layer else { return next.run(req).await };
    if req.method() == Method::OPTIONS && !is_preflight(&req) {
        return next.run(req).await;
    }
    match layer.layer(next).oneshot(req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_origins_off_loopback_are_told_apart() {
        assert!(is_insecure_remote("http://app.example.test"));
        assert!(is_insecure_remote("http://10.0.0.5:8080"));
        for fine in ["https://app.example.test", "http://localhost:3000", "http://127.0.0.1:8080", "http://[::1]:8080"]
        {
            assert!(!is_insecure_remote(fine), "{fine}");
        }
    }

    fn ok(s: &str) -> String {
        parse_origin(s).unwrap().to_str().unwrap().to_owned()
    }

    #[test]
    fn origins_are_normalised_as_browsers_send_them() {
        assert_eq!(ok("https://app.example.test"), "https://app.example.test");
        assert_eq!(ok("https://app.example.test/"), "https://app.example.test");
        assert_eq!(ok(" HTTPS://App.Example.TEST:8443 "), "https://app.example.test:8443");
        assert_eq!(ok("https://app.example.test:443"), "https://app.example.test");
        assert_eq!(ok("http://app.example.test:80"), "http://app.example.test");
        assert_eq!(ok("http://app.example.test:443"), "http://app.example.test:443");
        assert_eq!(ok("http://127.0.0.1:5173"), "http://127.0.0.1:5173");
        assert_eq!(ok("http://[::1]:5173"), "http://[::1]:5173");
    }

    #[test]
    fn wildcards_null_paths_and_other_schemes_are_refused() {
        let star = parse_origin("*").unwrap_err();
        assert!(star.reason.contains("credentials"), "{star}");
        for bad in [
            "null",
            "app.example.test",
            "ftp://app.example.test",
            "file:///tmp/x.html",
            "https://",
            "https://*.example.test",
            "https://app.example.test/path",
            "https://app.example.test/?q=1",
            "https://app.example.test#f",
            "https://user:pw@app.example.test",
            "",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn a_list_is_deduplicated_and_empty_means_off() {
        let list =
            AllowedOrigins::parse(["https://a.example.test", "HTTPS://A.example.test/", "http://b.test"]).unwrap();
        assert_eq!(list.origins().collect::<Vec<_>>(), ["https://a.example.test", "http://b.test"]);
        assert!(list.layer().is_some());
        let none = AllowedOrigins::parse(Vec::<String>::new()).unwrap();
        assert!(none.is_empty() && none.layer().is_none());
        assert!(AllowedOrigins::parse(["https://a.example.test", "*"]).is_err());
    }
}
