//! The server's HTTP side (axum): webhooks at `/hooks/{forge}` (or
//! `/hooks`, the forge detected from the headers), the runner protocol
//! under `/runner/` (bearer runner tokens), the JSON API under `/api/`
//! ([`api`]), the runs pages ([`ui`]: `/runs`, `/runners`), `/healthz`,
//! `/readyz` (503 while draining) and `/metrics`.
//! Handlers only translate: the work is the [`Service`]'s, and a webhook
//! answers once its run is durably queued, doing no other work.

pub mod api;
pub mod ui;

use std::future::Future;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use subtle::ConstantTimeEq;

use super::config::TokenHash;
use super::forge::ForgeKind;
use super::runner::protocol::{
    BeatAnswer, FinishRequest, JobReportWire, LeaseRequest, LogAnswer, LogChunk, RUNNER_ID_HEADER,
    paths,
};
use super::service::Service;
use super::store::{Error as StoreError, Lease};
use super::webhook::MAX_BODY_BYTES;
use crate::error_chain;

/// The router of a server.
pub fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route("/hooks", post(hook_detect))
        .route("/hooks/{forge}", post(hook))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .route(paths::CLAIM, post(claim))
        .route(paths::HEARTBEAT, post(heartbeat))
        .route(paths::EVENTS, post(events))
        .route(paths::LOGS, post(logs))
        .route(paths::FINISH, post(finish))
        .route(paths::RELEASE, post(release))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .merge(
            api::router().route_layer(axum::middleware::from_fn_with_state(
                Arc::clone(&service),
                api_reads,
            )),
        )
        .merge(ui::router())
        .with_state(service)
}

type Shared = State<Arc<Service>>;

/// The token of an `Authorization: Bearer` header.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// The name of the token in `tokens` that `headers` bear, compared in
/// constant time over the hashes.
pub(crate) fn authorized<'t>(headers: &HeaderMap, tokens: &'t [TokenHash]) -> Option<&'t str> {
    token_name(bearer(headers)?, tokens)
}

/// The name of `token` in `tokens`, compared in constant time over the
/// hashes.
pub(crate) fn token_name<'t>(token: &str, tokens: &'t [TokenHash]) -> Option<&'t str> {
    let presented = TokenHash::of(token);
    tokens
        .iter()
        .find(|t| bool::from(t.sha256.as_bytes().ct_eq(presented.as_bytes())))
        .map(|t| t.name.as_str())
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// A request refused before any work: its status and message.
pub(crate) struct Refused(StatusCode, &'static str);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

async fn hook(
    State(service): Shared,
    Path(forge): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let kind = match forge.as_str() {
        "github" => ForgeKind::GitHub,
        "gitlab" => ForgeKind::GitLab,
        "gitea" => ForgeKind::Gitea,
        "forgejo" => ForgeKind::Forgejo,
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                format!("no hook for forge {forge:?}"),
            );
        }
    };
    let answer = service.webhook(Some(kind), &headers, &body).await;
    (answer.status, Json(&answer)).into_response()
}

async fn hook_detect(State(service): Shared, headers: HeaderMap, body: Bytes) -> Response {
    let answer = service.webhook(None, &headers, &body).await;
    (answer.status, Json(&answer)).into_response()
}

/// The API's reads need an API token when the pages are not public
/// (`[ui] public = false`); the OpenAPI document stays public, and writes
/// check their token themselves.
async fn api_reads(
    State(service): Shared,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let read = request.method() == http::Method::GET;
    if read
        && !service.config.ui.public
        && request.uri().path() != "/api/openapi.json"
        && authorized(request.headers(), &service.config.api_tokens).is_none()
    {
        return Refused(StatusCode::UNAUTHORIZED, "an API token is required").into_response();
    }
    next.run(request).await
}

async fn ready(State(service): Shared) -> Response {
    if service.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else {
        "ready\n".into_response()
    }
}

async fn metrics(State(service): Shared) -> Response {
    match service.store.counts().await {
        Ok(counts) => {
            let window = service.config.queue.lease + service.config.queue.claim_wait;
            (
                [(
                    http::header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )],
                service.metrics.render(&counts, window),
            )
                .into_response()
        }
        Err(e) => store_error(&e),
    }
}

/// A store error as an answer: 409 when fenced, 404 for an unknown run,
/// else 503 (logged).
pub(crate) fn store_error(e: &StoreError) -> Response {
    match e {
        StoreError::Fenced { .. } => error(StatusCode::CONFLICT, e.to_string()),
        StoreError::NotFound(_) => error(StatusCode::NOT_FOUND, e.to_string()),
        StoreError::NotFinished { .. }
        | StoreError::UnknownJob { .. }
        | StoreError::UnfinishedStatus { .. }
        | StoreError::LogOffset { .. } => error(StatusCode::BAD_REQUEST, e.to_string()),
        _ => {
            tracing::error!("{}", error_chain::one_line(e));
            error(StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable")
        }
    }
}

/// The runner's lease owner name: `TOKEN_NAME/INSTANCE`; `Err` answers
/// 401.
fn runner(service: &Service, headers: &HeaderMap) -> Result<String, Refused> {
    let Some(name) = authorized(headers, &service.config.runner_tokens) else {
        return Err(Refused(
            StatusCode::UNAUTHORIZED,
            "a runner token is required",
        ));
    };
    let instance = headers
        .get(RUNNER_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 100)
        .unwrap_or("runner");
    Ok(format!("{name}/{instance}"))
}

/// Checks the caller holds the lease it writes with.
fn owns(owner: &str, lease_owner: &str) -> Result<(), Refused> {
    if owner == lease_owner {
        Ok(())
    } else {
        Err(Refused(
            StatusCode::FORBIDDEN,
            "this lease belongs to another runner",
        ))
    }
}

async fn claim(State(service): Shared, headers: HeaderMap) -> Response {
    let owner = match runner(&service, &headers) {
        Ok(owner) => owner,
        Err(refused) => return refused.into_response(),
    };
    match service.claim(&owner).await {
        Ok(Some(assignment)) => Json(assignment).into_response(),
        Ok(None) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => store_error(&e),
    }
}

/// Answers a runner's write: 401 without a runner token, 403 when the
/// lease is another runner's, else `write`'s result (409 when fenced).
async fn leased<F>(service: &Service, headers: &HeaderMap, lease: &Lease, write: F) -> Response
where
    F: Future<Output = Result<Response, StoreError>>,
{
    if let Err(refused) = runner(service, headers).and_then(|owner| owns(&owner, &lease.owner)) {
        return refused.into_response();
    }
    write.await.unwrap_or_else(|e| store_error(&e))
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

async fn heartbeat(
    State(service): Shared,
    headers: HeaderMap,
    Json(request): Json<LeaseRequest>,
) -> Response {
    let write = async {
        let cancel_requested = service.heartbeat(&request.lease).await?;
        Ok(Json(BeatAnswer { cancel_requested }).into_response())
    };
    leased(&service, &headers, &request.lease, write).await
}

async fn events(
    State(service): Shared,
    headers: HeaderMap,
    Json(report): Json<JobReportWire>,
) -> Response {
    let write = async {
        let event = report.event.clone().into();
        service.job_event(&report.lease, &report.job, event).await?;
        Ok(no_content())
    };
    leased(&service, &headers, &report.lease, write).await
}

async fn logs(State(service): Shared, headers: HeaderMap, Json(chunk): Json<LogChunk>) -> Response {
    let write = async {
        let data = chunk.data.as_bytes();
        let end = service
            .log(&chunk.lease, &chunk.job, chunk.offset, data)
            .await?;
        Ok(Json(LogAnswer { end }).into_response())
    };
    leased(&service, &headers, &chunk.lease, write).await
}

async fn finish(
    State(service): Shared,
    headers: HeaderMap,
    Json(request): Json<FinishRequest>,
) -> Response {
    let write = async {
        service.finish(&request).await?;
        Ok(no_content())
    };
    leased(&service, &headers, &request.lease, write).await
}

async fn release(
    State(service): Shared,
    headers: HeaderMap,
    Json(request): Json<LeaseRequest>,
) -> Response {
    let write = async {
        service.release(&request.lease).await?;
        Ok(no_content())
    };
    leased(&service, &headers, &request.lease, write).await
}
