//! The JSON body extractor of every handler that takes one.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::api_error::ApiError;
use crate::error::KdcError;

/// A JSON body whose every rejection is a problem+json answer: 400 for bad
/// JSON or fields (and for anything but a JSON object), 413 over the size
/// limit, 415 without a JSON content type.
#[derive(Debug)]
pub(crate) struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<ObjectOnly<T>>::from_request(req, state).await {
            Ok(Json(ObjectOnly(v))) => Ok(Self(v)),
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

/// `T`, read from a JSON object only. serde's derived structs also accept a
/// JSON array of their fields in order, so `[null, null]` would be read as
/// an update that changes nothing (and answered `200`); every body of this
/// API is an object, as `openapi.yaml` says.
struct ObjectOnly<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOnly<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(std::marker::PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = T;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }

        deserializer.deserialize_map(ObjectVisitor(std::marker::PhantomData)).map(ObjectOnly)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Update {
        disabled: Option<bool>,
        roles: Option<Vec<String>>,
    }

    fn read(body: &str) -> Result<Update, String> {
        serde_json::from_str::<ObjectOnly<Update>>(body).map(|o| o.0).map_err(|e| e.to_string())
    }

    /// Found by contract fuzzing: `PATCH` with `[null, null]` was read as an
    /// empty update and answered 200.
    #[test]
    fn only_an_object_is_read() {
        assert_eq!(read(r#"{"disabled": true}"#), Ok(Update { disabled: Some(true), roles: None }));
        assert_eq!(read("{}"), Ok(Update { disabled: None, roles: None }));
        for not_an_object in ["[null, null]", "[true, []]", "null", "7", r#""x""#] {
            let e = read(not_an_object).unwrap_err();
            assert!(e.contains("expected a JSON object"), "{not_an_object}: {e}");
        }
        // Inside an object, the fields' own rules still apply.
        assert!(read(r#"{"disabled": true, "extra": 1}"#).is_err());
        assert!(read(r#"{"roles": "admin"}"#).is_err());
    }
}
