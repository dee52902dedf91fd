//! leadscore's HTTP API: the axum router with every route in one OpenAPI document, auth by API key and
//! problem+json errors. Used by `leadscore-api` (cluster) and `leadscore serve` (embedded).

pub mod compat;
pub mod config;
pub mod doc;
pub mod extract;
pub mod guard;
pub mod limits;
pub mod observe;
pub mod problem;
pub mod routes;
pub mod server;

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Uri;
use leadscore_store::Store;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

pub use crate::limits::{KeyLimiter, KeyLimits};
use crate::problem::ApiError;
pub use crate::server::ServerLimits;
/// The type of [`AppState::upload_limits`], re-exported for whoever builds an `AppState`; it belongs to the
/// store's CSV ingest.
pub use leadscore_store::UploadLimits;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub upload_limits: UploadLimits,
    /// The AI layer's settings (cost estimates) and its gate (`resume` closes the breaker); `None`: AI off.
    pub ai: Option<AiSettings>,
    /// Per-key request rate, uploads in progress and unfinished runs (`KeyLimiter::default()`: production).
    pub key_limits: KeyLimiter,
    /// Keys or keyless (decided at start) and the hosts browsers may use: see [`guard`].
    pub access: guard::Access,
    /// Settings of the seed-compatible routes (links, waiting), read at start.
    pub compat: compat::CompatConfig,
}

/// What the API needs of the AI layer; the workers hold the client.
#[derive(Clone)]
pub struct AiSettings {
    pub config: leadscore_llm::LlmConfig,
    pub gate: leadscore_llm::Gate,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "leadscore",
        description = "Scores B2B sales leads for buying intent: a rule layer (role, industry, completeness) plus an \
            AI layer. Errors are RFC 9457 problem+json naming the field or CSV line at fault. Authenticate with \
            `Authorization: Bearer <API key>` once keys exist (`leadscore keys create`).\n\n\
            The `/api/...` routes mirror the service leadscore replaces (its shapes and `{\"error\": ...}` errors; \
            ids are strings).",
        license(name = "Apache-2.0")
    ),
    tags(
        (name = "offers", description = "What you sell and to whom"),
        (name = "leads", description = "Uploading and reading leads"),
        (name = "uploads", description = "Upload reports and rejected rows"),
        (name = "runs", description = "Scoring runs: one job per lead on a queue, results and exports"),
        (name = "operations", description = "Health and readiness"),
        (name = "compat", description = "Routes of the original service, kept for existing clients"),
    ),
)]
struct ApiDoc;

/// The API routes and their OpenAPI document, built together so neither can miss a route.
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    use crate::routes::{health, leads, offers, runs, uploads};
    let uploads_routes = OpenApiRouter::new()
        .routes(routes!(leads::upload_leads))
        .routes(routes!(compat::upload_leads))
        // Uploads stream and enforce their own byte limit.
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn(limits::upload_slot));
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(offers::create_offer, offers::list_offers))
        .routes(routes!(offers::get_offer, offers::update_offer, offers::delete_offer))
        .routes(routes!(leads::list_leads))
        .routes(routes!(leads::get_lead, leads::delete_lead))
        .routes(routes!(uploads::get_upload))
        .routes(routes!(uploads::list_upload_errors))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(compat::create_offer, compat::list_offers))
        .routes(routes!(compat::get_offer, compat::update_offer, compat::delete_offer))
        .routes(routes!(compat::list_leads))
        .routes(routes!(compat::get_lead, compat::delete_lead))
        .routes(routes!(compat::score_leads))
        .routes(routes!(compat::list_results))
        .routes(routes!(compat::export_csv))
        .merge(runs::router())
        .merge(uploads_routes)
        .split_for_parts();
    // The key scheme and the common error responses need every route in the document.
    doc::finish(&mut doc);
    (router, doc)
}

/// The whole application: API routes, `/openapi.json`, Swagger UI at `/docs`, and a problem+json 404.
pub fn app(state: AppState) -> Router {
    let (api, doc) = api();
    api.merge(SwaggerUi::new("/docs").url("/openapi.json", doc))
        .fallback(|uri: Uri| async move { ApiError::NoRoute(uri.path().to_owned()) })
        .layer(axum::middleware::from_fn_with_state(state.clone(), limits::admit))
        // Outside the per-key limits: a refused browser request costs no key lookup.
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard::guard))
        // Outermost, so every answer counts and is traced, refusals included; after routing, so it sees the
        // route template.
        .layer(axum::middleware::from_fn(observe::track))
        .with_state(state)
}

/// A `Location` header for `url` (our ids are ASCII, so it is always valid; an invalid one is left out).
pub(crate) fn location(url: &str) -> axum::http::HeaderMap {
    let mut headers = axum::http::HeaderMap::new();
    if let Ok(v) = axum::http::HeaderValue::from_str(url) {
        headers.insert(axum::http::header::LOCATION, v);
    }
    headers
}

/// The OpenAPI document alone (for tests and `leadscore openapi`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    api().1
}

/// Serves `app` on `listener` with the default [`ServerLimits`] until `shutdown` resolves, then finishes
/// in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with_limits(listener, state, ServerLimits::default(), shutdown).await
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets in-flight requests finish for at most
/// `limits.drain_timeout` (see [`server`] for every bound on a client).
pub async fn serve_with_limits(
    listener: tokio::net::TcpListener,
    state: AppState,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(?addr, "listening");
    // Progress of runs worked by other processes reaches event streams through Postgres notifications.
    let store = state.store.clone();
    let notifications = tokio::spawn(async move {
        loop {
            if let Err(e) = store.listen().await {
                tracing::debug!(error = %e, "run notifications interrupted; reconnecting");
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    });
    let served = server::serve(listener, app(state), limits, shutdown).await;
    notifications.abort();
    served
}
