//! `/event-types` and `/event-types/{name}/schemas`.

use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_schema::EventType;
use sluice_schema::event_type::EventTypeSchema;
use sluice_views::Views;

use crate::AppState;
use crate::body;
use crate::problem::Problem;

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
    let et: EventType = body::json(&headers, body, bus.config().max_batch_bytes, "event type")?;
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
    let et: EventType = body::json(&headers, body, bus.config().max_batch_bytes, "event type")?;
    Ok(Json(bus.update_event_type(&name, et).await?))
}

pub async fn delete(
    State(bus): State<AppState>,
    Extension(views): Extension<Arc<Views>>,
    Path(name): Path<String>,
) -> Result<StatusCode, Problem> {
    // Like a subscription, a view reading it keeps it (its rows would go stale).
    let readers = views.readers_of(&name);
    if !readers.is_empty() {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            format!(
                "event type {name} is read by views {}; delete them first",
                readers.join(", ")
            ),
        ));
    }
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
    let versions = bus.schema_versions(&name)?;
    let limit = page.limit.unwrap_or(20);
    if !(1..=1000).contains(&limit) {
        return Err(Problem::bad_request("limit must be between 1 and 1000"));
    }
    let offset = page.offset.unwrap_or(0);
    let items: Vec<_> = versions.iter().skip(offset).take(limit).collect();
    let href =
        |o: usize| json!({"href": format!("/event-types/{name}/schemas?offset={o}&limit={limit}")});
    let mut links = serde_json::Map::new();
    if offset > 0 {
        links.insert("prev".into(), href(offset.saturating_sub(limit)));
    }
    if offset + limit < versions.len() {
        links.insert("next".into(), href(offset + limit));
    }
    Ok(Json(json!({"items": items, "_links": links})))
}

pub async fn schema_version(
    State(bus): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, Problem> {
    let versions = bus.schema_versions(&name)?;
    let found = if version == "latest" {
        versions.first()
    } else {
        versions.iter().find(|v| v.version == version)
    };
    found.map(|v| Json(json!(v))).ok_or_else(|| {
        Problem::not_found(format!(
            "event type `{name}` has no schema version {version:?}"
        ))
    })
}

#[derive(Debug, Deserialize)]
pub struct FetchQuery {
    #[serde(default)]
    fetch: bool,
}

/// `POST /event-types/{name}/schemas`: a new schema version (200, as Nakadi answers).
pub async fn add_schema(
    State(bus): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<FetchQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<EventTypeSchema>, Problem> {
    let schema: EventTypeSchema =
        body::json(&headers, body, bus.config().max_batch_bytes, "schema")?;
    Ok(Json(bus.add_schema(&name, schema, q.fetch).await?))
}

/// `POST /event-types/{name}/schemas/{version}/compatibility-check`.
pub async fn compatibility_check(
    State(bus): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, Problem> {
    let schema: EventTypeSchema =
        body::json(&headers, body, bus.config().max_batch_bytes, "schema")?;
    let c = bus.check_schema(&name, &version, &schema.schema)?;
    let mut v = json!({
        "is_compatible": c.is_compatible,
        "compatibility_mode": c.compatibility_mode,
        "reason": c.reason,
    });
    if let Some(next) = c.version {
        v["version"] = json!(next);
    }
    Ok(Json(v))
}
