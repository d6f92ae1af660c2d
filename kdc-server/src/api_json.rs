//! The JSON body extractor of every handler that takes one.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::api_error::ApiError;
use crate::error::KdcError;

/// A JSON body whose every rejection is a problem+json answer: 400 for bad
/// JSON or fields, 413 over the size limit, 415 without a JSON content type.
#[derive(Debug)]
pub(crate) struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(rejection) => Err(match rejection {
                JsonRejection::MissingJsonContentType(_) => KdcError::UnsupportedMediaType,
                JsonRejection::JsonDataError(e) => KdcError::Malformed(e.body_text()),
                JsonRejection::JsonSyntaxError(_) => KdcError::Malformed("body is not valid JSON".to_owned()),
                JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                    KdcError::PayloadTooLarge
                }
                _ => KdcError::Malformed("could not read the request body".to_owned()),
            }
            .into()),
        }
    }
}
