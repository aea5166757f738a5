//! `/event-types/{name}/partitions` (bounds as cursors, optional lag) and
//! `PUT /event-types/{name}/partition-count`.

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_bus::{CursorOffset, PartitionInfo};

use crate::AppState;
use crate::body;
use crate::problem::Problem;

fn to_json(p: &PartitionInfo, consumed: Option<CursorOffset>) -> Value {
    let mut v = json!({
        "partition": p.partition.to_string(),
        "oldest_available_offset": p.oldest.to_string(),
        "newest_available_offset": p.newest.to_string(),
    });
    if let Some(c) = consumed {
        v["unconsumed_events"] = json!(p.unconsumed_after(c));
    }
    v
}

fn parse_offset(s: &str) -> Result<CursorOffset, Problem> {
    CursorOffset::parse(s)
        .ok_or_else(|| Problem::unprocessable(format!("invalid cursor offset {s:?}")))
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// A JSON array of `{partition, offset}`: adds `unconsumed_events` to those partitions.
    cursors: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Cursor {
    partition: String,
    offset: String,
}

pub async fn list(
    State(bus): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<Value>>, Problem> {
    let partitions = bus.partitions(&name).await?;
    let cursors: Vec<Cursor> = match &q.cursors {
        Some(raw) => body::parse(raw.as_bytes(), "cursors")?,
        None => Vec::new(),
    };
    let mut consumed = vec![None; partitions.len()];
    for c in &cursors {
        let p = c
            .partition
            .parse::<usize>()
            .ok()
            .filter(|p| *p < partitions.len())
            .ok_or_else(|| {
                Problem::unprocessable(format!(
                    "event type {name} has no partition {:?}",
                    c.partition
                ))
            })?;
        consumed[p] = Some(parse_offset(&c.offset)?);
    }
    Ok(Json(
        partitions
            .iter()
            .zip(consumed)
            .map(|(p, c)| to_json(p, c))
            .collect(),
    ))
}

#[derive(Debug, Deserialize)]
pub struct OneQuery {
    consumed_offset: Option<String>,
}

pub async fn one(
    State(bus): State<AppState>,
    Path((name, partition)): Path<(String, String)>,
    Query(q): Query<OneQuery>,
) -> Result<Json<Value>, Problem> {
    let partitions = bus.partitions(&name).await?;
    let p = partition
        .parse::<usize>()
        .ok()
        .and_then(|p| partitions.get(p))
        .ok_or_else(|| {
            Problem::not_found(format!("event type {name} has no partition {partition:?}"))
        })?;
    let consumed = q.consumed_offset.as_deref().map(parse_offset).transpose()?;
    Ok(Json(to_json(p, consumed)))
}

#[derive(Debug, Deserialize)]
struct PartitionCount {
    partition_count: u32,
}

pub async fn set_count(
    State(bus): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, Problem> {
    let req: PartitionCount = body::json(
        &headers,
        body,
        bus.config().max_batch_bytes,
        "partition count",
    )?;
    bus.set_partition_count(&name, req.partition_count).await?;
    Ok(StatusCode::NO_CONTENT)
}
