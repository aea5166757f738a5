//! Health, version, the strategy registries and the 404 fallback.

use axum::Json;
use axum::http::{Method, StatusCode, Uri};
use serde_json::{Value, json};
use sluice_schema::PartitionStrategy;

use crate::problem::Problem;

/// 200 as soon as requests are accepted.
pub async fn health() -> &'static str {
    "OK"
}

pub async fn version() -> Json<Value> {
    Json(json!({"name": "sluice", "version": env!("CARGO_PKG_VERSION")}))
}

pub async fn partition_strategies() -> Json<Value> {
    Json(json!(PartitionStrategy::ALL))
}

pub async fn enrichment_strategies() -> Json<Value> {
    Json(json!(["metadata_enrichment"]))
}

pub async fn method_not_allowed(method: Method, uri: Uri) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

pub async fn not_found(uri: Uri) -> Problem {
    Problem::not_found(format!("no such resource: {}", uri.path()))
}
