//! `/views`: SQL views (create, replace, list, status, delete) and their rows, read
//! from this node's memory; a read may first wait for the view to have applied what
//! a publish wrote (`X-Sluice-Wait-For`, the publish's `X-Sluice-Written`).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use sluice_bus::CursorOffset;
use sluice_views::{Policy, Views, ViewsError};

use crate::AppState;
use crate::body;
use crate::problem::Problem;

/// The header a read names what it waits for (the format of `X-Sluice-Written`).
pub const WAIT_FOR_HEADER: &str = "x-sluice-wait-for";
/// Answers whether the view had applied what the read waited for.
pub const CAUGHT_UP_HEADER: &str = "x-sluice-caught-up";
/// The longest a read may wait.
const MAX_WAIT: Duration = Duration::from_secs(10);

impl From<ViewsError> for Problem {
    fn from(e: ViewsError) -> Problem {
        match e {
            ViewsError::NotFound(_) => Problem::not_found(e.to_string()),
            ViewsError::Exists(_) => Problem::new(StatusCode::CONFLICT, e.to_string()),
            ViewsError::Sql(_) | ViewsError::Invalid(_) => Problem::unprocessable(e.to_string()),
            ViewsError::Loading(_) => Problem::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            ViewsError::Bus(b) => b.into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Body {
    sql: String,
    #[serde(default)]
    on_error: Policy,
    /// A data change event type to publish the view's changes to.
    publish_as: Option<String>,
}

fn limit(bus: &AppState) -> usize {
    bus.config().max_batch_bytes
}

fn with_location(status: StatusCode, name: &str, body: serde_json::Value) -> Response {
    let mut r = (status, Json(body)).into_response();
    if let Ok(loc) = HeaderValue::from_str(&format!("/views/{name}")) {
        r.headers_mut().insert(header::LOCATION, loc);
    }
    r
}

pub async fn create(
    State(bus): State<AppState>,
    Extension(views): Extension<Arc<Views>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let b: Body = body::json(&headers, body, limit(&bus), "view")?;
    let def = views.create(&b.sql, b.on_error, b.publish_as).await?;
    let status = views.status(&def.name).await?;
    Ok(with_location(StatusCode::CREATED, &def.name, status))
}

pub async fn put(
    State(bus): State<AppState>,
    Extension(views): Extension<Arc<Views>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let b: Body = body::json(&headers, body, limit(&bus), "view")?;
    let (def, created) = views.put(&name, &b.sql, b.on_error, b.publish_as).await?;
    let status = views.status(&def.name).await?;
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(with_location(code, &def.name, status))
}

pub async fn list(Extension(views): Extension<Arc<Views>>) -> Result<Response, Problem> {
    let mut items = Vec::new();
    for name in views.names() {
        // A view deleted meanwhile is simply not listed.
        if let Ok(s) = views.status(&name).await {
            items.push(s);
        }
    }
    Ok(Json(json!({ "items": items })).into_response())
}

pub async fn get_one(
    Extension(views): Extension<Arc<Views>>,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    Ok(Json(views.status(&name).await?).into_response())
}

pub async fn delete(
    Extension(views): Extension<Arc<Views>>,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    views.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /views/{name}/snapshots`: the view's state and offsets, copied to the
/// snapshot dir; a fresh node restores from the latest one.
pub async fn snapshot(
    Extension(views): Extension<Arc<Views>>,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    let path = views.snapshot(&name).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "view": name, "path": path.display().to_string() })),
    )
        .into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ReadParams {
    /// How long a read waits for `X-Sluice-Wait-For` (ms; default 1000, at most 10000).
    wait_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RangeParams {
    #[serde(default)]
    prefix: String,
    after: Option<String>,
    limit: Option<usize>,
    wait_ms: Option<u64>,
}

/// `event_type:partition:cursor;...` as (event type, partition, offset).
fn wait_for(headers: &HeaderMap) -> Result<Vec<(String, u32, u64)>, Problem> {
    let Some(v) = headers.get(WAIT_FOR_HEADER) else {
        return Ok(Vec::new());
    };
    let text = v
        .to_str()
        .map_err(|_| Problem::bad_request("X-Sluice-Wait-For is not text"))?;
    let mut out = Vec::new();
    for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || {
            Problem::bad_request(format!(
                "X-Sluice-Wait-For: {part:?} is not event_type:partition:cursor"
            ))
        };
        let mut it = part.rsplitn(3, ':');
        let (Some(cursor), Some(p), Some(t)) = (it.next(), it.next(), it.next()) else {
            return Err(bad());
        };
        let p: u32 = p.parse().map_err(|_| bad())?;
        match CursorOffset::parse(cursor) {
            Some(CursorOffset::At(o)) => out.push((t.to_string(), p, o)),
            Some(CursorOffset::Begin) => {}
            None => return Err(bad()),
        }
    }
    Ok(out)
}

/// Waits as the read asks; the header saying whether the view caught up.
async fn wait(
    views: &Views,
    name: &str,
    headers: &HeaderMap,
    wait_ms: Option<u64>,
) -> Result<Option<bool>, Problem> {
    let written = wait_for(headers)?;
    if written.is_empty() {
        return Ok(None);
    }
    let wait = Duration::from_millis(wait_ms.unwrap_or(1000)).min(MAX_WAIT);
    Ok(Some(views.wait_for(name, &written, wait).await?))
}

fn caught_up(mut r: Response, caught_up: Option<bool>) -> Response {
    if let Some(c) = caught_up {
        r.headers_mut().insert(
            CAUGHT_UP_HEADER,
            HeaderValue::from_static(if c { "true" } else { "false" }),
        );
    }
    r
}

pub async fn row(
    Extension(views): Extension<Arc<Views>>,
    Path((name, key)): Path<(String, String)>,
    Query(params): Query<ReadParams>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let c = wait(&views, &name, &headers, params.wait_ms).await?;
    match views.row(&name, &key)? {
        Some(row) => Ok(caught_up(Json(row).into_response(), c)),
        None => Ok(caught_up(
            Problem::not_found(format!("view `{name}` has no row with key {key:?}"))
                .into_response(),
            c,
        )),
    }
}

pub async fn rows(
    Extension(views): Extension<Arc<Views>>,
    Path(name): Path<String>,
    Query(params): Query<RangeParams>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let c = wait(&views, &name, &headers, params.wait_ms).await?;
    let limit = params.limit.unwrap_or(100);
    if limit == 0 || limit > 10_000 {
        return Err(Problem::unprocessable("limit must be 1 to 10000"));
    }
    let items = views.rows(&name, &params.prefix, params.after.as_deref(), limit)?;
    Ok(caught_up(
        Json(json!({ "items": items })).into_response(),
        c,
    ))
}
