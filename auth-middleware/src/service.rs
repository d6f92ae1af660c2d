//! [`TicketAuth`]: the `Service` the layer wraps around an inner service.

use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::OriginalUri;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use kdc_proto::AuthenticationInfo;
use kdc_proto::MutualReply;
use tower::{Service, ServiceExt};

use crate::future::ResponseFuture;
use crate::layer::Shared;
use crate::rejection::AuthRejection;
use crate::verifier::BoundRequest;

/// Name of the response header that carries the mutual reply.
pub use kdc_proto::AUTHENTICATION_INFO;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The authenticating service. See [`crate::TicketAuthLayer`].
#[derive(Clone)]
pub struct TicketAuth<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> std::fmt::Debug for TicketAuth<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketAuth").finish_non_exhaustive()
    }
}

impl<S> TicketAuth<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for TicketAuth<S>
where
    S: Service<Request<Body>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    ReqBody: http_body::Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<BoxError>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // The instance that was polled ready goes into the future; a fresh
        // clone stays behind for the next call.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        ResponseFuture { inner: Box::pin(authenticate_then_call(shared, inner, req)) }
    }
}

async fn authenticate_then_call<S, ReqBody, ResBody>(
    shared: Arc<Shared>,
    inner: S,
    req: Request<ReqBody>,
) -> Result<Response<Body>, S::Error>
where
    S: Service<Request<Body>, Response = Response<ResBody>> + Send,
    S::Future: Send,
    ReqBody: http_body::Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<BoxError>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let refuse = |r: AuthRejection| {
        tracing::info!(reason = %r.code(), "request refused");
        Ok(r.into_response_for(&shared.realm))
    };
    let now = shared.clock.now();
    let verifier = &shared.verifier;
    let (mut parts, body) = req.into_parts();
    // Exactly one Authorization header: with two, a proxy in front and this
    // layer could each read a different one.
    let mut values = parts.headers.get_all(header::AUTHORIZATION).iter();
    let authorization = match (values.next(), values.next()) {
        (Some(v), None) => match v.to_str() {
            Ok(v) => Some(v),
            Err(_) => return refuse(AuthRejection::MalformedCredentials),
        },
        (None, _) => None,
        (Some(_), Some(_)) => return refuse(AuthRejection::MalformedCredentials),
    };
    let pending = match verifier.open(authorization, now) {
        Ok(p) => p,
        Err(r) => return refuse(r),
    };
    let has_body = !http_body::Body::is_end_stream(&body) && http_body::Body::size_hint(&body).exact() != Some(0);
    let (bytes, body) = if pending.binds_body() {
        match Limited::new(body, verifier.settings().max_body_bytes).collect().await {
            Ok(collected) => {
                let b = collected.to_bytes();
                (Some(b.clone()), Body::from(b))
            }
            Err(_) => return refuse(AuthRejection::BodyTooLarge),
        }
    } else {
        (None, Body::new(body))
    };
    // Bind to the request as the client sent it, even under a nested router.
    let uri = parts.extensions.get::<OriginalUri>().map_or(&parts.uri, |o| &o.0);
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let Ok(authority) = request_authority(&parts) else { return refuse(AuthRejection::BindingMismatch) };
    let request = BoundRequest {
        method: parts.method.as_str(),
        authority: authority.as_deref(),
        path_and_query: &path_and_query,
        body: bytes.as_deref(),
        has_body,
    };
    let verified = match verifier.complete(pending, request, now).await {
        Ok(v) => v,
        Err(r) => return refuse(r),
    };
    parts.extensions.insert(verified.principal.clone());
    let response = inner.oneshot(Request::from_parts(parts, body)).await?;
    let (mut rparts, rbody) = response.into_parts();
    let rbytes = match Limited::new(rbody, verifier.settings().max_response_bytes).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => {
            tracing::error!("inner service's response body failed or exceeded the size the layer signs");
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            return Ok(r);
        }
    };
    let Ok(mutual) = MutualReply::for_response(&verified.authenticator, rparts.status.as_u16(), &rbytes)
        .seal(verified.ticket.session_key())
    else {
        // Never send an answer the client cannot authenticate as if it were one.
        tracing::error!("sealing the mutual reply failed");
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        return Ok(r);
    };
    if let Ok(v) = HeaderValue::from_str(&AuthenticationInfo { mutual }.to_string()) {
        rparts.headers.insert(AUTHENTICATION_INFO, v);
    }
    rparts.headers.remove(header::CONTENT_LENGTH);
    Ok(Response::from_parts(rparts, Body::from(rbytes)))
}

/// The authority a request names: the request target's (absolute form, or
/// HTTP/2's `:authority`), else the one `Host` header. Two `Host` headers, or
/// one that is not text, are refused (`Err`).
fn request_authority(parts: &axum::http::request::Parts) -> Result<Option<String>, ()> {
    if let Some(a) = parts.uri.authority() {
        return Ok(Some(a.as_str().to_owned()));
    }
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) => Ok(None),
        (Some(h), None) => h.to_str().map(|s| Some(s.to_owned())).map_err(|_| ()),
        (Some(_), Some(_)) => Err(()),
    }
}
