//! Typed errors of the bus; the HTTP edge maps each to a stable Problem.

use sluice_log::LogError;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("event type `{0}` does not exist")]
    EventTypeNotFound(String),
    /// The request body is not what the endpoint takes (HTTP 400).
    #[error("{0}")]
    Malformed(String),
    #[error("event type `{0}` has no schema version {1:?}")]
    SchemaVersionNotFound(String, String),
    #[error("event type `{0}` already exists")]
    EventTypeExists(String),
    /// The request is well-formed but breaks rules; every broken rule is listed.
    #[error("{}", .0.join("; "))]
    Unprocessable(Vec<String>),
    #[error("subscription `{0}` does not exist")]
    SubscriptionNotFound(String),
    /// The request conflicts with the current state (HTTP 409).
    #[error("{0}")]
    Conflict(String),
    /// What the request relies on does not hold (HTTP 412), e.g. expired cursors.
    #[error("{0}")]
    PreconditionFailed(String),
    /// The log lost the topic of an event type the registry holds: it was deleted
    /// outside Sluice (HTTP 500; other event types are unaffected).
    #[error(
        "event type `{0}` has no topic in the log: it was deleted outside Sluice, with its events; \
         delete and recreate the event type, or restart a node (it recreates the topic, empty)"
    )]
    TopicMissing(String),
    #[error("storage: {0}")]
    Log(LogError),
    #[error("stored metadata is damaged: {0}")]
    Metadata(String),
}

pub type Result<T, E = BusError> = std::result::Result<T, E>;

impl From<LogError> for BusError {
    fn from(e: LogError) -> BusError {
        match e {
            // Event types are topics of the same name; internal topics start with `__`.
            LogError::TopicNotFound(t) if !t.starts_with(crate::registry::INTERNAL_PREFIX) => {
                BusError::TopicMissing(t)
            }
            e => BusError::Log(e),
        }
    }
}
