//! JSON helpers shared by the route modules: reading capped bodies, raw JSON passthrough,
//! Go-compatible number and timestamp output.

use axum::{body::Body, response::Response};
use serde::Serializer;
use serde_json::value::RawValue;

use axum::response::IntoResponse;
use http::StatusCode;
use serde_json::json;

use crate::{
    edge::{BODY_LIMIT, payload_too_large},
    error::RestError,
    preauth::status_of,
};

/// Why a request body could not be used.
pub(crate) enum BodyError {
    TooLarge,
    /// The server's budget for unauthenticated bodies is spent (docs/decisions.md D19).
    Busy,
    /// The body did not arrive within the body-read timeout.
    TimedOut,
    Invalid,
}

impl BodyError {
    /// The answers that need no auth decision (413, 503, 408); anything else is the caller's
    /// documented 400.
    pub(crate) fn early_response(&self) -> Option<Response> {
        match self {
            Self::TooLarge => Some(payload_too_large()),
            Self::Busy => Some(
                RestError::with_body(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"error": "server busy — retry shortly", "retry_after": 1}),
                )
                .into_response(),
            ),
            Self::TimedOut => Some(
                RestError::new(StatusCode::REQUEST_TIMEOUT, "request body timeout").into_response(),
            ),
            Self::Invalid => None,
        }
    }
}

/// Reads the whole body (at most the default cap) as bytes.
pub(crate) async fn read_body(body: Body) -> Result<bytes::Bytes, BodyError> {
    read_body_capped(body, BODY_LIMIT).await
}

impl BodyError {
    /// Why reading a body failed, from the error its stream gave.
    pub(crate) fn of(err: &(dyn std::error::Error + 'static)) -> Self {
        if err.is::<http_body_util::LengthLimitError>() {
            return Self::TooLarge;
        }
        match status_of(err).map(tonic::Status::code) {
            Some(tonic::Code::ResourceExhausted) => Self::Busy,
            Some(tonic::Code::DeadlineExceeded) => Self::TimedOut,
            _ => Self::Invalid,
        }
    }
}

/// Reads the whole body, at most `limit` bytes, as bytes.
pub(crate) async fn read_body_capped(body: Body, limit: usize) -> Result<bytes::Bytes, BodyError> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|err| BodyError::of(err.into_inner().as_ref()))
}

/// Reads and parses a JSON object body into `T`.
pub(crate) async fn parse_body<T: serde::de::DeserializeOwned>(body: Body) -> Result<T, BodyError> {
    parse_body_capped(body, BODY_LIMIT).await
}

/// Reads (at most `limit` bytes) and parses a JSON object body into `T`. Only an object: serde
/// would also read a struct from an array of its fields in order (`[500]`), which no client
/// means.
pub(crate) async fn parse_body_capped<T: serde::de::DeserializeOwned>(
    body: Body,
    limit: usize,
) -> Result<T, BodyError> {
    let bytes = read_body_capped(body, limit).await?;
    decode(&bytes, b'{')
}

/// Reads and parses a JSON array body into `T`.
pub(crate) async fn parse_list_body<T: serde::de::DeserializeOwned>(
    body: Body,
) -> Result<T, BodyError> {
    let bytes = read_body(body).await?;
    decode(&bytes, b'[')
}

/// Parses `bytes`, whose first non-blank byte must be `opening`.
fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], opening: u8) -> Result<T, BodyError> {
    if bytes.trim_ascii_start().first() != Some(&opening) {
        return Err(BodyError::Invalid);
    }
    serde_json::from_slice(bytes)
        .or_else(|_| from_integral_floats(bytes))
        .map_err(|_| BodyError::Invalid)
}

/// JSON has one number type: `3.0` is the integer 3 to JSON Schema and to many clients (Python's
/// `json.dumps` of a float), so a body refused only for that is read again with such numbers
/// written as integers. Only a refused body pays for the second parse.
fn from_integral_floats<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> serde_json::Result<T> {
    fn rewrite(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Number(number) => {
                if let Some(float) = number.as_f64().filter(|_| number.is_f64())
                    && float.fract() == 0.0
                    && float.abs() < 9.2e18
                {
                    *number = (float as i64).into();
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(rewrite),
            serde_json::Value::Object(fields) => fields.values_mut().for_each(rewrite),
            _ => {}
        }
    }
    let mut value: serde_json::Value = serde_json::from_slice(bytes)?;
    rewrite(&mut value);
    serde_json::from_str(&value.to_string())
}

/// Stored JSON text, emitted verbatim (key order and big integers survive).
pub(crate) fn raw(text: Option<&str>) -> Option<Box<RawValue>> {
    text.and_then(|text| RawValue::from_string(text.to_owned()).ok())
}

/// Floats the way the reference (Go) prints them: `0`, `120.5`.
pub(crate) fn go_float<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        serializer.serialize_i64(*value as i64)
    } else {
        serializer.serialize_f64(*value)
    }
}

/// RFC 3339 in UTC with fractional seconds, as the reference prints timestamps.
pub(crate) fn timestamp(at: &prost_types::Timestamp) -> String {
    chrono::DateTime::from_timestamp(at.seconds, at.nanos.max(0) as u32)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

pub(crate) fn timestamp_opt(at: Option<&prost_types::Timestamp>) -> Option<String> {
    at.map(timestamp)
}

/// For `#[serde(default, deserialize_with = "present")]`: a field sent as JSON `null` is
/// present (`Some` of the null), unlike a plain `Option`, which reads it as absent.
pub(crate) fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// An RFC 3339 time, or empty for none (empty query values mean absent, as in the reference).
pub(crate) fn date_time_or_empty() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type};
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(0)),
        )
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Step {
        index: i32,
        #[serde(default)]
        weight: f64,
        payload: Option<Box<RawValue>>,
    }

    #[test]
    fn integral_floats_read_as_integers_and_fractions_still_fail() {
        let step: Step =
            from_integral_floats(br#"{"index": 699.0, "weight": 2.0, "payload": {"a": [1.5]}}"#)
                .unwrap();
        assert_eq!(step.index, 699);
        assert_eq!(step.weight, 2.0);
        assert_eq!(step.payload.unwrap().get(), r#"{"a":[1.5]}"#);
        assert!(from_integral_floats::<Step>(br#"{"index": 699.5}"#).is_err());
        assert!(from_integral_floats::<Step>(br#"{"index": 1e300}"#).is_err());
    }
}
