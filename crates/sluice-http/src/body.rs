//! Reading request bodies: content type, then JSON, with errors as Problems.

use std::io::Read;

use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use bytes::Bytes;
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

/// Undoes `Content-Encoding: gzip | zstd` (Nakadi accepts both on publish), refusing to
/// inflate past `limit` bytes.
pub fn decode(headers: &HeaderMap, body: Bytes, limit: usize) -> Result<Bytes, Problem> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    let corrupt = |e: std::io::Error| {
        Problem::bad_request(format!("the {encoding} body cannot be decompressed: {e}"))
    };
    let mut out = Vec::new();
    match encoding.as_str() {
        "identity" | "" => return Ok(body),
        "gzip" => {
            flate2::read::GzDecoder::new(&body[..])
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(corrupt)?;
        }
        "zstd" => {
            let decoder = ruzstd::decoding::StreamingDecoder::new(&body[..])
                .map_err(|e| corrupt(std::io::Error::other(e.to_string())))?;
            decoder
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(corrupt)?;
        }
        other => {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Content-Encoding {other:?} is not supported; use gzip or zstd"),
            ));
        }
    }
    if out.len() > limit {
        return Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the decompressed body is larger than the limit of {limit} bytes"),
        ));
    }
    Ok(Bytes::from(out))
}

/// A JSON request body as bytes: content type checked, size rejections as Problems,
/// `Content-Encoding` undone (up to `limit` bytes).
pub fn json_bytes(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<Bytes, Problem> {
    require_json(headers)?;
    let body = body.map_err(|r| Problem::new(r.status(), r.body_text()))?;
    decode(headers, body, limit)
}

/// A JSON request body parsed into `T` (see `json_bytes` and `parse`).
pub fn json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    limit: usize,
    what: &str,
) -> Result<T, Problem> {
    parse(&json_bytes(headers, body, limit)?, what)
}
