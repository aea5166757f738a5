//! Reading request bodies: content type, then JSON, with errors as Problems.

use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use crate::problem::Problem;

/// Requires `Content-Type: application/json` (parameters such as charset allowed).
pub fn require_json(headers: &HeaderMap) -> Result<(), Problem> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if mime.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type must be application/json, not {ct:?}"),
        ))
    }
}

/// Parses a JSON body: syntax errors are 400, a wrong shape (missing field, unknown
/// value) is 422, as in Nakadi.
pub fn parse<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, Problem> {
    serde_json::from_slice(bytes).map_err(|e| {
        let detail = format!("{what}: {e}");
        match e.classify() {
            serde_json::error::Category::Data => Problem::unprocessable(detail),
            _ => Problem::bad_request(detail),
        }
    })
}
