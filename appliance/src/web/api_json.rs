//! A JSON body extractor whose refusals are our error shape and name the field.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use super::api_error::ApiError;
use super::state::AppState;

/// A JSON request body of type `T`.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        // Requiring the JSON media type is also what keeps other sites out of
        // the session-less calls (setup, login): a cross-site page cannot send
        // it without a CORS preflight, which we never answer.
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with the header Content-Type: application/json",
            ));
        }
        let body = Bytes::from_request(request, state).await.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!("cannot read the body: {e}"),
            )
        })?;
        let mut de = serde_json::Deserializer::from_slice(&body);
        let value = serde_path_to_error::deserialize(&mut de).map_err(|e| json_error(&e))?;
        de.end().map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("the body has data after the JSON value: {e}"),
            )
        })?;
        Ok(Self(value))
    }
}

fn json_error(err: &serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let inner = err.inner().to_string();
    let path = err.path().to_string();
    // serde names a missing or unknown field only in its message.
    let named = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|prefix| {
            let rest = inner.strip_prefix(prefix)?;
            rest.split('`').next().map(str::to_owned)
        });
    let field = named.or_else(|| (path != ".").then_some(path));
    let message = match &field {
        Some(f) if inner.starts_with("missing field") => {
            format!("the field {f} is required; add it to the JSON body")
        }
        Some(f) if inner.starts_with("unknown field") => {
            format!("the field {f} is not known here; remove it ({inner})")
        }
        Some(f) => format!("the field {f} is invalid: {inner}"),
        None => format!("the body is not the expected JSON object: {inner}"),
    };
    let error = ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", message);
    match field {
        Some(f) => error.with_field(f),
        None => error,
    }
}
