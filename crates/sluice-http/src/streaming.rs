//! Streams of batches as `application/x-json-stream`, one line per batch: `GET` / `POST
//! /subscriptions/{id}/events` (with the `X-Nakadi-StreamId` header that commits must
//! carry) and the low-level `GET /event-types/{name}/events`.

use axum::body::Body;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use sluice_bus::reading::Cursor;
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
    Ok(stream_response(stream.lines, Some(&stream.id)))
}

/// `GET /event-types/{name}/events`: Nakadi's low-level read. Start positions come in the
/// `X-Nakadi-Cursors` header (a JSON array of `{partition, offset}`, `BEGIN` in any
/// case); without it every partition is read from its newest event on.
pub async fn low_level(
    State(bus): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    params: Result<Query<StreamParams>, QueryRejection>,
) -> Result<Response, Problem> {
    let Query(params) = params.map_err(|e| Problem::bad_request(e.body_text()))?;
    let cursors: Option<Vec<Cursor>> = match headers.get("x-nakadi-cursors") {
        None => None,
        Some(v) => Some(
            serde_json::from_slice(v.as_bytes())
                .map_err(|e| Problem::bad_request(format!("X-Nakadi-Cursors: {e}")))?,
        ),
    };
    let lines = bus.read_events(&name, cursors.as_deref(), &params).await?;
    Ok(stream_response(lines, None))
}

/// A streaming response of `lines`, with the stream id header when there is one.
///
/// The headers go out alone, and the first line a moment later: pyNakadi reads a stream
/// from the raw socket once its HTTP library has parsed the headers, so body bytes that
/// arrived with the headers sit in that library's buffer and are lost to it (its stream
/// then hangs). Nakadi never showed this because its first batch comes after a Kafka
/// fetch. It costs a stream's start, not its events.
fn stream_response(lines: tokio::sync::mpsc::Receiver<Bytes>, id: Option<&str>) -> Response {
    const HEAD_START: std::time::Duration = std::time::Duration::from_millis(200);
    let lines = futures_util::stream::unfold((lines, true), |(mut rx, first)| async move {
        if first {
            tokio::time::sleep(HEAD_START).await;
        }
        rx.recv()
            .await
            .map(|chunk| (Ok::<Bytes, std::convert::Infallible>(chunk), (rx, false)))
    });
    let mut resp = (StatusCode::OK, Body::from_stream(lines)).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-json-stream"),
    );
    if let Some(v) = id.and_then(|id| HeaderValue::from_str(id).ok()) {
        h.insert("x-nakadi-streamid", v);
    }
    resp
}
