//! `GET` / `POST /subscriptions/{id}/events`: a stream of batches as
//! `application/x-json-stream`, one line per batch, with the `X-Nakadi-StreamId` header
//! that commits must carry.

use axum::body::Body;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use sluice_bus::subscriptions::StreamParams;

use crate::AppState;
use crate::body;
use crate::problem::Problem;

/// Stream parameters in the query string.
pub async fn get(
    State(bus): State<AppState>,
    Path(id): Path<String>,
    params: Result<Query<StreamParams>, QueryRejection>,
) -> Result<Response, Problem> {
    let Query(params) = params.map_err(|e| Problem::bad_request(e.body_text()))?;
    open(&bus, &id, &params).await
}

/// Stream parameters in a JSON body (what nakadion sends), with `partitions` for
/// direct assignment.
pub async fn post(
    State(bus): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let raw = body.map_err(|r| Problem::new(r.status(), r.body_text()))?;
    let params: StreamParams = if raw.iter().all(u8::is_ascii_whitespace) {
        StreamParams::default()
    } else {
        body::require_json(&headers)?;
        body::parse(&raw, "stream parameters")?
    };
    open(&bus, &id, &params).await
}

async fn open(bus: &AppState, id: &str, params: &StreamParams) -> Result<Response, Problem> {
    let stream = bus
        .subscriptions()
        .open_stream(bus.registry(), id, params)
        .await?;
    let lines = futures_util::stream::unfold(stream.lines, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<Bytes, std::convert::Infallible>(chunk), rx))
    });
    let mut resp = (StatusCode::OK, Body::from_stream(lines)).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-json-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&stream.id) {
        h.insert("x-nakadi-streamid", v);
    }
    Ok(resp)
}
