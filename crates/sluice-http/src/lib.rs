//! Sluice's HTTP edge: the Nakadi-compatible API over the bus. Only this crate knows
//! HTTP. `router` builds the whole API (testable without a socket); `serve` runs it.

mod body;
mod cursors;
mod event_types;
mod events;
mod misc;
mod partitions;
mod problem;
mod streaming;
mod subscriptions;
mod views;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::Uri;
use axum::routing::get;
use sluice_bus::Bus;
use sluice_views::Views;
use tokio::net::TcpListener;

pub use problem::Problem;

pub(crate) type AppState = Arc<Bus>;

/// How the API treats its callers.
#[derive(Clone, Debug, Default)]
pub struct ApiOptions {
    /// A request header that carries the authenticated caller, set by a trusted proxy in
    /// front of Sluice (e.g. `X-Forwarded-User`). Its value becomes the
    /// `metadata.published_by` of published events; without it they get
    /// `unauthenticated`, as on a Nakadi without an authentication plugin.
    pub principal_header: Option<axum::http::HeaderName>,
}

/// The API routes.
pub fn router(bus: Arc<Bus>, views: Arc<Views>, options: ApiOptions) -> Router {
    Router::new()
        .route("/health", get(misc::health))
        .route("/version", get(misc::version))
        .route(
            "/registry/partition-strategies",
            get(misc::partition_strategies),
        )
        .route(
            "/registry/enrichment-strategies",
            get(misc::enrichment_strategies),
        )
        .route(
            "/event-types",
            get(event_types::list).post(event_types::create),
        )
        .route(
            "/event-types/{name}",
            get(event_types::get_one)
                .put(event_types::update)
                .delete(event_types::delete),
        )
        .route(
            "/event-types/{name}/schemas",
            get(event_types::schemas).post(event_types::add_schema),
        )
        .route(
            "/event-types/{name}/schemas/{version}",
            get(event_types::schema_version),
        )
        .route(
            "/event-types/{name}/events",
            axum::routing::post(events::publish).get(streaming::low_level),
        )
        .route(
            "/event-types/{name}/cursor-distances",
            axum::routing::post(cursors::distances),
        )
        .route(
            "/event-types/{name}/cursors-lag",
            axum::routing::post(cursors::lag),
        )
        .route(
            "/event-types/{name}/cursor-lag",
            axum::routing::post(cursors::lag),
        )
        .route(
            "/event-types/{name}/shifted-cursors",
            axum::routing::post(cursors::shifted),
        )
        .route(
            "/event-types/{name}/schemas/{version}/compatibility-check",
            axum::routing::post(event_types::compatibility_check),
        )
        .route(
            "/event-types/{name}/deleted-events",
            axum::routing::post(events::delete_events),
        )
        .route("/event-types/{name}/partitions", get(partitions::list))
        .route(
            "/event-types/{name}/partitions/{partition}",
            get(partitions::one),
        )
        .route(
            "/event-types/{name}/partition-count",
            axum::routing::put(partitions::set_count),
        )
        .route(
            "/subscriptions",
            get(subscriptions::list).post(subscriptions::create),
        )
        .route(
            "/subscriptions/{id}",
            get(subscriptions::get_one)
                .put(subscriptions::update)
                .delete(subscriptions::delete),
        )
        .route(
            "/subscriptions/{id}/events",
            get(streaming::get).post(streaming::post),
        )
        .route(
            "/subscriptions/{id}/cursors",
            get(subscriptions::cursors)
                .post(subscriptions::commit)
                .patch(subscriptions::reset),
        )
        .route("/subscriptions/{id}/stats", get(subscriptions::stats))
        .route("/views", get(views::list).post(views::create))
        .route(
            "/views/{name}",
            get(views::get_one).put(views::put).delete(views::delete),
        )
        .route("/views/{name}/rows", get(views::rows))
        .route(
            "/views/{name}/snapshots",
            axum::routing::post(views::snapshot),
        )
        .route("/views/{name}/rows/{*key}", get(views::row))
        .fallback(misc::not_found)
        .method_not_allowed_fallback(misc::method_not_allowed)
        .layer(DefaultBodyLimit::max(bus.config().max_batch_bytes))
        .layer(axum::Extension(options))
        .layer(axum::Extension(views))
        .with_state(bus)
}

/// Drops one trailing slash (`/event-types/` -> `/event-types`): Nakadi clients such as
/// nakadion send them, and Nakadi accepted them.
fn strip_trailing_slash(mut req: Request) -> Request {
    let uri = req.uri();
    let path = uri.path();
    if path.len() > 1 && path.ends_with('/') {
        let trimmed = path.trim_end_matches('/');
        let rebuilt = match uri.query() {
            Some(q) => format!("{trimmed}?{q}"),
            None => trimmed.to_string(),
        };
        if let Ok(new) = rebuilt.parse::<Uri>() {
            *req.uri_mut() = new;
        }
    }
    req
}

/// Serves the API on `listener` until `shutdown` completes; in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    bus: Arc<Bus>,
    views: Arc<Views>,
    options: ApiOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(bus, views, options);
    let service = tower::util::MapRequest::new(app, strip_trailing_slash);
    // No Nagle: a stream line or a small answer goes out at once, not after the
    // client's delayed ACK of the previous one.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
    });
    axum::serve(
        listener,
        axum::ServiceExt::<Request>::into_make_service(service),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
