//! `POST /event-types/{name}/events`: publishing, with Nakadi's 200 / 207 / 422 contract.

use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use serde_json::{Value, json};
use sluice_bus::{CursorOffset, ItemOutcome, ItemStatus, Published, Publisher, Written};

use crate::body;
use crate::problem::Problem;
use crate::{ApiOptions, AppState};

/// `metadata.published_by` when the caller is not known.
const UNAUTHENTICATED: &str = "unauthenticated";

pub async fn publish(
    State(bus): State<AppState>,
    Extension(options): Extension<ApiOptions>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let body = body::json_bytes(&headers, body, bus.config().max_batch_bytes)?;
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let published_by = options
        .principal_header
        .as_ref()
        .and_then(header)
        .filter(|p| !p.is_empty())
        .unwrap_or(UNAUTHENTICATED);
    let publisher = Publisher {
        flow_id: header(&HeaderName::from_static("x-flow-id")).map(String::from),
        published_by: Some(published_by.into()),
    };
    Ok(respond(&name, bus.publish(&name, &body, &publisher).await?))
}

/// `POST /event-types/{name}/deleted-events`: tombstones for a compacted event type.
pub async fn delete_events(
    State(bus): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let body = body::json_bytes(&headers, body, bus.config().max_batch_bytes)?;
    Ok(respond(&name, bus.delete_events(&name, &body).await?))
}

/// Where a request's events were written, for read-your-writes: event type,
/// partition and cursor of the last event per partition, `;`-separated
/// (`shop.price:0:001-0001-000000000000000041`). Nakadi clients ignore it.
pub const WRITTEN_HEADER: &str = "x-sluice-written";

fn written_header(name: &str, written: &Written) -> Option<(HeaderName, HeaderValue)> {
    if written.is_empty() {
        return None;
    }
    let text = written
        .iter()
        .map(|(p, o)| format!("{name}:{p}:{}", CursorOffset::At(*o)))
        .collect::<Vec<_>>()
        .join(";");
    Some((
        HeaderName::from_static(WRITTEN_HEADER),
        HeaderValue::from_str(&text).ok()?,
    ))
}

/// 200 with no body, 207 or 422 with the per-item list.
fn respond(name: &str, published: Published) -> Response {
    match published {
        Published::All(written) => {
            let mut r = StatusCode::OK.into_response();
            r.headers_mut().extend(written_header(name, &written));
            r
        }
        Published::Partial(items, written) => {
            let mut r = (StatusCode::MULTI_STATUS, Json(batch_items(&items))).into_response();
            r.headers_mut().extend(written_header(name, &written));
            r
        }
        Published::Rejected(items) => {
            (StatusCode::UNPROCESSABLE_ENTITY, Json(batch_items(&items))).into_response()
        }
    }
}

/// Nakadi's `BatchItemResponse` list.
fn batch_items(items: &[ItemOutcome]) -> Value {
    let list: Vec<Value> = items
        .iter()
        .map(|item| {
            let (status, step, detail) = match &item.status {
                ItemStatus::Submitted => ("submitted", "none", None),
                ItemStatus::Failed { step, detail } => ("failed", *step, Some(detail.as_str())),
                ItemStatus::Aborted => ("aborted", "none", None),
            };
            let mut v = json!({"publishing_status": status, "step": step});
            if let Some(eid) = &item.eid {
                v["eid"] = json!(eid);
            }
            if let Some(d) = detail {
                v["detail"] = json!(d);
            }
            v
        })
        .collect();
    Value::Array(list)
}
