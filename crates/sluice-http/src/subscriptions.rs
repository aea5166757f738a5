//! `/subscriptions`: create (idempotent by key), list, get, update, delete; committed
//! cursors (get, commit, reset) and stats.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_bus::subscriptions::{
    CommitResult, PartitionCursor, PartitionStats, ResetTo, Subscription, SubscriptionCursor,
};
use sluice_bus::{Bus, CursorOffset};

use crate::AppState;
use crate::body;
use crate::problem::Problem;

fn limit(bus: &Bus) -> usize {
    bus.config().max_batch_bytes
}

pub async fn create(
    State(bus): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let s: Subscription = body::json(&headers, body, limit(&bus), "subscription")?;
    let (s, created) = bus.subscriptions().create(bus.registry(), s).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut resp = (status, Json(&*s)).into_response();
    if let Ok(loc) = HeaderValue::from_str(&format!("/subscriptions/{}", s.id)) {
        resp.headers_mut().insert(header::LOCATION, loc.clone());
        resp.headers_mut().insert(header::CONTENT_LOCATION, loc);
    }
    Ok(resp)
}

/// The subscription as JSON, with its partitions' assignment when asked.
async fn with_status(bus: &Bus, s: &Subscription, show: bool) -> Result<Value, Problem> {
    let mut v = json!(s);
    if show {
        let stats = bus
            .subscriptions()
            .stats(bus.registry(), &s.id, false)
            .await?;
        v["status"] = stats
            .iter()
            .map(|(et, parts)| {
                json!({
                    "event_type": et,
                    "partitions": parts.iter().map(|p| {
                        let mut j = json!({"partition": p.partition.to_string(), "state": p.state});
                        if let Some(id) = &p.stream_id { j["stream_id"] = json!(id); }
                        if let Some(t) = p.assignment_type { j["assignment_type"] = json!(t); }
                        j
                    }).collect::<Vec<_>>(),
                })
            })
            .collect();
    }
    Ok(v)
}

/// `GET /subscriptions?owning_application=&event_type=a&event_type=b|a,b&limit=&offset=&show_status=`
pub async fn list(
    State(bus): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, Problem> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
        .map_err(|e| Problem::bad_request(format!("query: {e}")))?;
    let mut owner = None;
    let mut types: Vec<String> = Vec::new();
    let (mut limit, mut offset, mut show) = (20usize, 0usize, false);
    for (k, v) in &pairs {
        let number = |v: &str| {
            v.parse::<usize>().map_err(|_| {
                Problem::bad_request(format!("{k} must be a non-negative integer, not {v:?}"))
            })
        };
        match k.as_str() {
            "owning_application" => owner = Some(v.clone()),
            // clin joins several with commas.
            "event_type" => types.extend(v.split(',').filter(|s| !s.is_empty()).map(String::from)),
            "limit" => limit = number(v)?,
            "offset" => offset = number(v)?,
            "show_status" => show = v == "true",
            _ => {}
        }
    }
    if !(1..=1000).contains(&limit) {
        return Err(Problem::bad_request(format!(
            "limit must be 1..1000, not {limit}"
        )));
    }
    let matching: Vec<Arc<Subscription>> = bus
        .subscriptions()
        .list()
        .into_iter()
        .filter(|s| owner.as_ref().is_none_or(|o| &s.owning_application == o))
        .filter(|s| types.iter().all(|t| s.event_types.contains(t)))
        .collect();
    let mut items = Vec::new();
    for s in matching.iter().skip(offset).take(limit) {
        items.push(with_status(&bus, s, show).await?);
    }
    let link = |offset: usize| {
        let mut q: Vec<(&str, String)> = Vec::new();
        if let Some(o) = &owner {
            q.push(("owning_application", o.clone()));
        }
        for t in &types {
            q.push(("event_type", t.clone()));
        }
        q.push(("offset", offset.to_string()));
        q.push(("limit", limit.to_string()));
        let qs = serde_urlencoded::to_string(&q).unwrap_or_default();
        json!({"href": format!("/subscriptions?{qs}")})
    };
    let mut links = json!({});
    if offset > 0 {
        links["prev"] = link(offset.saturating_sub(limit));
    }
    if offset + limit < matching.len() {
        links["next"] = link(offset + limit);
    }
    Ok(Json(json!({"items": items, "_links": links})))
}

#[derive(Debug, Deserialize)]
pub struct ShowStatus {
    #[serde(default)]
    show_status: bool,
}

pub async fn get_one(
    State(bus): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ShowStatus>,
) -> Result<Json<Value>, Problem> {
    let s = bus.subscriptions().get(&id)?;
    Ok(Json(with_status(&bus, &s, q.show_status).await?))
}

/// Only authorization, annotations and labels change; 204 as Nakadi (and clin) do.
pub async fn update(
    State(bus): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, Problem> {
    let s: Subscription = body::json(&headers, body, limit(&bus), "subscription")?;
    bus.subscriptions().update(bus.registry(), &id, s).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn delete(
    State(bus): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    bus.subscriptions().delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn cursor_json(et: &str, p: u32, offset: CursorOffset) -> Value {
    json!({
        "event_type": et,
        "partition": p.to_string(),
        "offset": offset.to_string(),
        "cursor_token": uuid_like(),
    })
}

fn uuid_like() -> String {
    let n = fastrand::u128(..);
    let h = format!("{n:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

pub async fn cursors(
    State(bus): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    let all = bus.subscriptions().cursors(bus.registry(), &id).await?;
    let items: Vec<Value> = all
        .iter()
        .map(|((et, p), o)| cursor_json(et, *p, *o))
        .collect();
    Ok(Json(json!({"items": items})))
}

#[derive(Debug, Deserialize)]
struct CommitBody {
    items: Vec<SubscriptionCursor>,
}

/// `POST /subscriptions/{id}/cursors` with `X-Nakadi-StreamId`: 204 when every cursor
/// moved forward, else 200 with each one's result.
pub async fn commit(
    State(bus): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let stream = headers
        .get("x-nakadi-streamid")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Problem::bad_request("the X-Nakadi-StreamId header is required to commit"))?
        .to_string();
    let body: CommitBody = body::json(&headers, body, limit(&bus), "cursors")?;
    let results = bus
        .subscriptions()
        .commit(&id, &stream, &body.items)
        .await?;
    if results.iter().all(|r| *r == CommitResult::Committed) {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let items: Vec<Value> = body
        .items
        .iter()
        .zip(&results)
        .map(|(c, r)| {
            let result = match r {
                CommitResult::Committed => "committed",
                CommitResult::Outdated => "outdated",
            };
            json!({"cursor": c, "result": result})
        })
        .collect();
    Ok((StatusCode::OK, Json(json!({"items": items}))).into_response())
}

/// Nakadi's `{"items": [cursors]}`, or beyond it `{"to": "begin" | "end" | RFC 3339 time}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetBody {
    items: Option<Vec<PartitionCursor>>,
    to: Option<String>,
}

/// `PATCH /subscriptions/{id}/cursors`: closes the subscription's streams, then moves
/// its cursors.
pub async fn reset(
    State(bus): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, Problem> {
    let body: ResetBody = body::json(&headers, body, limit(&bus), "cursor reset")?;
    let to = match (body.items, body.to.as_deref()) {
        (Some(items), None) => ResetTo::Cursors(items),
        (None, Some(to)) if to.eq_ignore_ascii_case("begin") => ResetTo::Begin,
        (None, Some(to)) if to.eq_ignore_ascii_case("end") => ResetTo::End,
        (None, Some(to)) => {
            ResetTo::Time(sluice_schema::time::parse_rfc3339(to).ok_or_else(|| {
                Problem::unprocessable(format!(
                    "\"to\" must be \"begin\", \"end\" or an RFC 3339 time, not {to:?}"
                ))
            })?)
        }
        _ => {
            return Err(Problem::unprocessable(
                "give either \"items\" (cursors) or \"to\" (begin, end or a time)",
            ));
        }
    };
    bus.subscriptions().reset(bus.registry(), &id, to).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
pub struct StatsQuery {
    #[serde(default)]
    show_time_lag: bool,
}

fn partition_stats(p: &PartitionStats) -> Value {
    let mut j = json!({
        "partition": p.partition.to_string(),
        "state": p.state,
        "unconsumed_events": p.unconsumed_events,
    });
    if let Some(lag) = p.consumer_lag_seconds {
        j["consumer_lag_seconds"] = json!(lag);
    }
    if let Some(id) = &p.stream_id {
        j["stream_id"] = json!(id);
    }
    if let Some(t) = p.assignment_type {
        j["assignment_type"] = json!(t);
    }
    j
}

pub async fn stats(
    State(bus): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<StatsQuery>,
) -> Result<Json<Value>, Problem> {
    let stats = bus
        .subscriptions()
        .stats(bus.registry(), &id, q.show_time_lag)
        .await?;
    let items: Vec<Value> = stats
        .iter()
        .map(|(et, parts)| {
            json!({
                "event_type": et,
                "partitions": parts.iter().map(partition_stats).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(json!({"items": items})))
}
