//! `/event-types` and `/event-types/{name}/schemas`.

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_schema::EventType;

use crate::AppState;
use crate::body;
use crate::problem::Problem;

pub(crate) fn read_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, Problem> {
    body.map_err(|r| Problem::new(r.status(), r.body_text()))
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    owning_application: Option<String>,
}

pub async fn list(State(bus): State<AppState>, Query(q): Query<ListQuery>) -> Json<Vec<EventType>> {
    let mut all = bus.event_types();
    if let Some(app) = q.owning_application {
        all.retain(|et| et.owning_application == app);
    }
    Json(all)
}

pub async fn create(
    State(bus): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    body::require_json(&headers)?;
    let et: EventType = body::parse(&read_body(body)?, "event type")?;
    let created = bus.create_event_type(et).await?;
    let mut resp = (StatusCode::CREATED, Json(&created)).into_response();
    if let Ok(loc) = HeaderValue::from_str(&format!("/event-types/{}", created.name)) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(resp)
}

pub async fn get_one(
    State(bus): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<EventType>, Problem> {
    Ok(Json(bus.event_type(&name)?))
}

pub async fn update(
    State(bus): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<EventType>, Problem> {
    body::require_json(&headers)?;
    let et: EventType = body::parse(&read_body(body)?, "event type")?;
    Ok(Json(bus.update_event_type(&name, et).await?))
}

pub async fn delete(
    State(bus): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, Problem> {
    bus.delete_event_type(&name).await?;
    Ok(StatusCode::OK)
}

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    limit: Option<usize>,
    offset: Option<usize>,
}

/// The schema versions of an event type, newest first, paginated like Nakadi.
pub async fn schemas(
    State(bus): State<AppState>,
    Path(name): Path<String>,
    Query(page): Query<PageQuery>,
) -> Result<Json<Value>, Problem> {
    let et = bus.event_type(&name)?;
    let limit = page.limit.unwrap_or(20);
    if !(1..=1000).contains(&limit) {
        return Err(Problem::bad_request("limit must be between 1 and 1000"));
    }
    let versions = [et.schema];
    let items: Vec<_> = versions
        .iter()
        .skip(page.offset.unwrap_or(0))
        .take(limit)
        .collect();
    Ok(Json(json!({"items": items, "_links": {}})))
}

pub async fn schema_version(
    State(bus): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, Problem> {
    let et = bus.event_type(&name)?;
    if version == "latest" || version == et.schema.version {
        return Ok(Json(json!(et.schema)));
    }
    Err(Problem::not_found(format!(
        "event type `{name}` has no schema version {version:?}"
    )))
}
