//! Problem JSON (RFC 7807, as Nakadi sends it): every error response of the API.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sluice_bus::BusError;

/// An error response: `application/problem+json` with type, title, status, detail.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Problem {
        Problem {
            problem_type: format!("https://httpstatus.es/{}", status.as_u16()),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail: detail.into(),
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, detail)
    }

    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, detail)
    }

    pub fn unprocessable(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut resp = (status, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        resp
    }
}

impl From<BusError> for Problem {
    fn from(e: BusError) -> Problem {
        let status = match &e {
            BusError::EventTypeNotFound(_)
            | BusError::SchemaVersionNotFound(..)
            | BusError::SubscriptionNotFound(_) => StatusCode::NOT_FOUND,
            BusError::EventTypeExists(_) | BusError::Conflict(_) => StatusCode::CONFLICT,
            BusError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            BusError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            BusError::Malformed(_) => StatusCode::BAD_REQUEST,
            BusError::Log(_) => StatusCode::SERVICE_UNAVAILABLE,
            BusError::Metadata(_) | BusError::TopicMissing(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::error!(error = %e, "request failed");
        }
        Problem::new(status, e.to_string())
    }
}
