//! Cursor arithmetic of the low-level API: `POST /event-types/{name}/cursor-distances`,
//! `/cursors-lag` (also as `/cursor-lag`, the path nakadion and pyNakadi call) and
//! `/shifted-cursors`. Every cursor is checked before any answer; 422 names each bad one.

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_bus::reading::Cursor;

use crate::AppState;
use crate::body;
use crate::problem::Problem;

#[derive(Debug, Deserialize)]
struct DistanceQuery {
    initial_cursor: Cursor,
    final_cursor: Cursor,
}

pub async fn distances(
    State(bus): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Vec<Value>>, Problem> {
    let queries: Vec<DistanceQuery> = body::json(
        &headers,
        body,
        bus.config().max_batch_bytes,
        "cursor distance queries",
    )?;
    let mut out = Vec::with_capacity(queries.len());
    for q in &queries {
        let distance = bus
            .cursor_distance(&name, &q.initial_cursor, &q.final_cursor)
            .await?;
        out.push(
            json!({"initial_cursor": q.initial_cursor, "final_cursor": q.final_cursor,
            "distance": distance}),
        );
    }
    Ok(Json(out))
}

pub async fn lag(
    State(bus): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Vec<Value>>, Problem> {
    let cursors: Vec<Cursor> = body::json(&headers, body, bus.config().max_batch_bytes, "cursors")?;
    let mut out = Vec::with_capacity(cursors.len());
    for c in &cursors {
        let (info, lag) = bus.cursor_lag(&name, c).await?;
        out.push(json!({
            "partition": info.partition.to_string(),
            "oldest_available_offset": info.oldest.to_string(),
            "newest_available_offset": info.newest.to_string(),
            "unconsumed_events": lag,
        }));
    }
    Ok(Json(out))
}

#[derive(Debug, Deserialize)]
struct ShiftedCursor {
    partition: String,
    offset: String,
    shift: i64,
}

pub async fn shifted(
    State(bus): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Vec<Cursor>>, Problem> {
    let shifts: Vec<ShiftedCursor> = body::json(
        &headers,
        body,
        bus.config().max_batch_bytes,
        "shifted cursors",
    )?;
    let mut out = Vec::with_capacity(shifts.len());
    for s in &shifts {
        let c = Cursor {
            partition: s.partition.clone(),
            offset: s.offset.clone(),
        };
        out.push(bus.shift_cursor(&name, &c, s.shift).await?);
    }
    Ok(Json(out))
}
