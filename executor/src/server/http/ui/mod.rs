//! The runs pages of `executor serve`, from the same binary: the runs list
//! (`/runs`, filtered, live over server-sent events), a run
//! (`/runs/{id}`, its jobs by stage, cancel and retry), a job's log
//! (`/runs/{id}/jobs/{job}`, live, ANSI colours, a raw download) and the
//! runners (`/runners`). Server-rendered HTML ([`pages`], maud) with one
//! small script and one style sheet embedded in the binary.
//!
//! Reading is public unless `[ui] public = false`, then it needs an API
//! token like writes always do: a bearer header, or the HttpOnly,
//! `SameSite=Strict` cookie that signing in with an API token at `/login`
//! sets. A write (a form POST) must also come from this site (its
//! `Origin` and `Sec-Fetch-Site`), so another site cannot forge one.
//! Handlers only translate: the reads and writes are the [`Service`]'s.

mod pages;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use futures_util::{Stream, StreamExt};
use maud::Markup;
use serde::Deserialize;

use super::{authorized, token_name};
use crate::error_chain;
use crate::server::service::Service;
use crate::server::store::{
    CancelOutcome, Error as StoreError, Job, Run, RunFilter, RunId, RunStatus,
};
use pages::{Filter, Viewer};

pub(super) const STYLE_PATH: &str = "/ui/style.css";
pub(super) const SCRIPT_PATH: &str = "/ui/app.js";
const STYLE: &str = include_str!("assets/style.css");
const SCRIPT: &str = include_str!("assets/app.js");

/// The sign-in cookie: the API token, hex-encoded.
const COOKIE: &str = "executor_token";
/// Runs on a page of the runs list.
const PAGE: u32 = 50;
/// How often a live page's data is read again.
const LIVE_POLL: Duration = Duration::from_secs(1);

type Shared = State<Arc<Service>>;

pub(super) fn router() -> Router<Arc<Service>> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/runs") }))
        .route(STYLE_PATH, get(style))
        .route(SCRIPT_PATH, get(script))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/runs", get(runs).post(trigger))
        .route("/runs/live", get(runs_live))
        .route("/runs/{id}", get(run))
        .route("/runs/{id}/live", get(run_live))
        .route("/runs/{id}/cancel", post(cancel))
        .route("/runs/{id}/retry", post(retry))
        .route("/runs/{id}/jobs/{job}", get(job_log))
        .route("/runs/{id}/jobs/{job}/live", get(job_log_live))
        .route("/runs/{id}/jobs/{job}/log.txt", get(job_log_raw))
        .route("/runners", get(runners))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

// Who is asking.

/// The API token of the sign-in cookie, if any.
fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .and_then(|(_, value)| hex::decode(value).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
}

/// A request's viewer: signed in when it bears an API token (header or
/// cookie).
struct Asker {
    viewer: Viewer,
    /// Whether it may read the pages.
    may_read: bool,
}

impl FromRequestParts<Arc<Service>> for Asker {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        service: &Arc<Service>,
    ) -> Result<Self, Self::Rejection> {
        Ok(asker(service, &parts.headers))
    }
}

fn asker(service: &Service, headers: &HeaderMap) -> Asker {
    let tokens = &service.config.api_tokens;
    let signed_in = authorized(headers, tokens).is_some()
        || cookie_token(headers).is_some_and(|token| token_name(&token, tokens).is_some());
    Asker {
        viewer: Viewer { signed_in },
        may_read: signed_in || service.config.ui.public,
    }
}

/// Whether a write comes from this site: a browser says where a form
/// was sent from (`Sec-Fetch-Site`, `Origin`); either naming another site
/// (not the request's host, nor `base_url` behind a proxy) refuses it.
fn same_origin(headers: &HeaderMap, base_url: &str) -> bool {
    let fetch_site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_none_or(|site| matches!(site, "same-origin" | "none"));
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|origin| {
            let authority = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"));
            (authority.is_some() && authority == host) || origin == base_url
        });
    fetch_site && origin
}

fn now_ms(service: &Service) -> i64 {
    service.store.clock().now_ms()
}

/// A full page.
fn page(service: &Service, title: &str, viewer: Viewer, main: &Markup) -> Response {
    let html = pages::layout(title, viewer, now_ms(service), main);
    (
        [(header::CACHE_CONTROL, "no-store")],
        Html(html.into_string()),
    )
        .into_response()
}

/// A page saying what went wrong, with its status.
fn problem(service: &Service, viewer: Viewer, status: StatusCode, message: &str) -> Response {
    let mut response = page(service, "Not available", viewer, &pages::problem(message));
    *response.status_mut() = status;
    response
}

/// The sign-in page for a reader who may not read `next`.
fn sign_in_first(next: &str) -> Response {
    let target = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("next", next)
        .finish();
    Redirect::to(&format!("/login?{target}")).into_response()
}

fn store_problem(service: &Service, viewer: Viewer, e: &StoreError) -> Response {
    if let StoreError::NotFound(id) = e {
        return problem(
            service,
            viewer,
            StatusCode::NOT_FOUND,
            &format!("There is no run #{id}."),
        );
    }
    tracing::error!("runs pages: {}", error_chain::one_line(e));
    problem(
        service,
        viewer,
        StatusCode::SERVICE_UNAVAILABLE,
        "The store is unavailable; try again shortly.",
    )
}

// Signing in.

#[derive(Debug, Deserialize)]
struct LoginQuery {
    next: Option<String>,
    failed: Option<u8>,
}

/// Where to go after signing in: a path on this site only.
fn local_path(next: Option<&str>) -> String {
    next.filter(|n| n.starts_with('/') && !n.starts_with("//") && !n.contains('\\'))
        .unwrap_or("/runs")
        .to_owned()
}

async fn login_form(State(service): Shared, asker: Asker, Query(q): Query<LoginQuery>) -> Response {
    let next = local_path(q.next.as_deref());
    let main = pages::login_page(&next, q.failed == Some(1));
    page(&service, "Sign in", asker.viewer, &main)
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    token: String,
    next: Option<String>,
}

/// The sign-in cookie's attributes: `Secure` when the server is reached
/// over HTTPS.
fn cookie_attributes(service: &Service) -> &'static str {
    if service.config.base_url.starts_with("https://") {
        "Path=/; HttpOnly; SameSite=Strict; Secure"
    } else {
        "Path=/; HttpOnly; SameSite=Strict"
    }
}

async fn login(
    State(service): Shared,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if !same_origin(&headers, &service.config.base_url) {
        return (StatusCode::FORBIDDEN, "cross-site sign-in refused\n").into_response();
    }
    let next = local_path(form.next.as_deref());
    let token = form.token.trim();
    if token_name(token, &service.config.api_tokens).is_none() {
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("next", &next)
            .append_pair("failed", "1")
            .finish();
        return Redirect::to(&format!("/login?{query}")).into_response();
    }
    let cookie = format!(
        "{COOKIE}={}; {}",
        hex::encode(token),
        cookie_attributes(&service)
    );
    let mut response = Redirect::to(&next).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn logout(State(service): Shared, headers: HeaderMap) -> Response {
    if !same_origin(&headers, &service.config.base_url) {
        return (StatusCode::FORBIDDEN, "cross-site sign-out refused\n").into_response();
    }
    let cookie = format!("{COOKIE}=; Max-Age=0; {}", cookie_attributes(&service));
    let mut response = Redirect::to("/runs").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

// Live updates.

/// Server-sent events of `render`'s HTML: sent at once, then again each
/// time it changes (read every [`LIVE_POLL`]), until it says it is final
/// (then an `end` event) or the server drains. A store error is logged
/// and read again later.
fn live<F, Fut>(service: Arc<Service>, render: F) -> Response
where
    F: Fn(Arc<Service>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(String, bool), StoreError>> + Send,
{
    struct State<F> {
        service: Arc<Service>,
        render: Arc<F>,
        last: Option<String>,
        ended: bool,
    }
    let state = State {
        service,
        render: Arc::new(render),
        last: None,
        ended: false,
    };
    let stream = futures_util::stream::unfold(state, |mut state| async move {
        loop {
            if state.ended || state.service.is_draining() {
                return None;
            }
            match (state.render)(Arc::clone(&state.service)).await {
                Ok((html, last)) if state.last.as_ref() != Some(&html) => {
                    let event = if last {
                        // The final state and its end in one event.
                        Event::default().event("end").data(&html)
                    } else {
                        Event::default().event("update").data(&html)
                    };
                    state.ended = last;
                    state.last = Some(html);
                    return Some((Ok::<_, Infallible>(event), state));
                }
                Ok((_, true)) => {
                    state.ended = true;
                    return Some((Ok(Event::default().event("end").data("")), state));
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("runs pages: {}", error_chain::one_line(&e)),
            }
            tokio::time::sleep(LIVE_POLL).await;
        }
    });
    sse(stream)
}

fn sse<S>(stream: S) -> Response
where
    S: Stream<Item = Result<Event, Infallible>> + Send + 'static,
{
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

// The runs list.

#[derive(Debug, Default, Deserialize)]
struct RunsQuery {
    repository: Option<String>,
    branch: Option<String>,
    status: Option<String>,
    before: Option<RunId>,
}

impl RunsQuery {
    /// The filter; `Err` names an unknown status.
    fn filter(&self) -> Result<Filter, String> {
        let non_empty = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let status = match non_empty(&self.status) {
            None => None,
            Some(s) => Some(
                RunStatus::ALL
                    .iter()
                    .copied()
                    .find(|st| st.as_str() == s)
                    .ok_or_else(|| format!("There is no run status {s:?}."))?,
            ),
        };
        Ok(Filter {
            repository: non_empty(&self.repository),
            branch: non_empty(&self.branch),
            status,
        })
    }
}

fn run_filter(filter: &Filter, before: Option<RunId>) -> RunFilter {
    RunFilter {
        repository: filter.repository.clone(),
        branch: filter.branch.clone(),
        status: filter.status,
        before,
        limit: PAGE,
    }
}

async fn runs(State(service): Shared, asker: Asker, Query(q): Query<RunsQuery>) -> Response {
    if !asker.may_read {
        return sign_in_first("/runs");
    }
    let filter = match q.filter() {
        Ok(filter) => filter,
        Err(message) => return problem(&service, asker.viewer, StatusCode::BAD_REQUEST, &message),
    };
    let runs = match service
        .store
        .list_runs(&run_filter(&filter, q.before))
        .await
    {
        Ok(runs) => runs,
        Err(e) => return store_problem(&service, asker.viewer, &e),
    };
    let older = (runs.len() == PAGE as usize)
        .then(|| runs.last())
        .flatten()
        .map(|last| {
            let query = filter.query();
            let sep = if query.is_empty() { '?' } else { '&' };
            format!("/runs{query}{sep}before={}", last.id)
        });
    let repositories: Vec<String> = service
        .config
        .repositories
        .iter()
        .map(|r| r.name.clone())
        .collect();
    let main = pages::runs_page(
        asker.viewer,
        &filter,
        &repositories,
        &runs,
        older,
        q.before.is_none(),
    );
    page(&service, "Runs", asker.viewer, &main)
}

#[derive(Debug, Deserialize)]
struct TriggerForm {
    repository: String,
    #[serde(rename = "ref")]
    git_ref: String,
}

/// Starts a run of a repository's branch, tag or ref (the runs page's
/// form); goes to the new run's page.
async fn trigger(
    State(service): Shared,
    headers: HeaderMap,
    Form(form): Form<TriggerForm>,
) -> Response {
    let asker = asker(&service, &headers);
    if let Some(refused) = write_refused(&service, &asker, &headers) {
        return refused;
    }
    let Some(repo) = service.config.repository(&form.repository).cloned() else {
        let message = format!("The repository {:?} is not configured.", form.repository);
        return problem(&service, asker.viewer, StatusCode::NOT_FOUND, &message);
    };
    let wanted = form.git_ref.trim();
    let Some(commit) = super::api::commit_of(&repo.clone_url, wanted).await else {
        let message = format!("{} has no branch, tag or ref {wanted:?}.", repo.name);
        return problem(&service, asker.viewer, StatusCode::BAD_REQUEST, &message);
    };
    match service
        .trigger(&repo, &super::api::full_ref(wanted), &commit)
        .await
    {
        Ok(id) => Redirect::to(&format!("/runs/{id}")).into_response(),
        Err(e) => store_problem(&service, asker.viewer, &e),
    }
}

async fn runs_live(State(service): Shared, asker: Asker, Query(q): Query<RunsQuery>) -> Response {
    if !asker.may_read {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let Ok(filter) = q.filter() else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    live(service, move |service| {
        let filter = run_filter(&filter, None);
        async move {
            let runs = service.store.list_runs(&filter).await?;
            let html = pages::run_rows(&runs).into_string();
            Ok((html, false))
        }
    })
}

// A run.

/// Run `id` and the jobs of its current attempt.
async fn run_and_jobs(service: &Service, id: RunId) -> Result<(Run, Vec<Job>), StoreError> {
    let run = service
        .store
        .run(id)
        .await?
        .ok_or(StoreError::NotFound(id))?;
    let jobs = service.store.jobs(id, Some(run.attempt)).await?;
    Ok((run, jobs))
}

fn details(service: &Service, run: &Run, jobs: &[Job], viewer: Viewer) -> Markup {
    let repo = service.config.repository(&run.repository);
    pages::run_details(run, jobs, repo, viewer)
}

async fn run(State(service): Shared, asker: Asker, Path(id): Path<RunId>) -> Response {
    if !asker.may_read {
        return sign_in_first(&format!("/runs/{id}"));
    }
    match run_and_jobs(&service, id).await {
        Ok((run, jobs)) => {
            let main = pages::run_page(&run, &details(&service, &run, &jobs, asker.viewer));
            page(&service, &format!("Run #{id}"), asker.viewer, &main)
        }
        Err(e) => store_problem(&service, asker.viewer, &e),
    }
}

async fn run_live(State(service): Shared, asker: Asker, Path(id): Path<RunId>) -> Response {
    if !asker.may_read {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let viewer = asker.viewer;
    live(service, move |service| async move {
        let (run, jobs) = run_and_jobs(&service, id).await?;
        let html = details(&service, &run, &jobs, viewer).into_string();
        Ok((html, run.status.is_finished()))
    })
}

/// The answer refusing a write by `asker` with `headers`: not from this
/// site, or not signed in; `None` lets it through.
fn write_refused(service: &Service, asker: &Asker, headers: &HeaderMap) -> Option<Response> {
    if !same_origin(headers, &service.config.base_url) {
        return Some((StatusCode::FORBIDDEN, "cross-site write refused\n").into_response());
    }
    (!asker.viewer.signed_in).then(|| {
        problem(
            service,
            asker.viewer,
            StatusCode::UNAUTHORIZED,
            "Sign in with an API token to cancel or retry runs.",
        )
    })
}

async fn cancel(State(service): Shared, headers: HeaderMap, Path(id): Path<RunId>) -> Response {
    let asker = asker(&service, &headers);
    if let Some(refused) = write_refused(&service, &asker, &headers) {
        return refused;
    }
    match service.cancel(id).await {
        Ok(
            CancelOutcome::Canceled | CancelOutcome::Requested | CancelOutcome::AlreadyFinished(_),
        ) => Redirect::to(&format!("/runs/{id}")).into_response(),
        Err(e) => store_problem(&service, asker.viewer, &e),
    }
}

async fn retry(State(service): Shared, headers: HeaderMap, Path(id): Path<RunId>) -> Response {
    let asker = asker(&service, &headers);
    if let Some(refused) = write_refused(&service, &asker, &headers) {
        return refused;
    }
    match service.retry(id).await {
        Ok(new) => Redirect::to(&format!("/runs/{new}")).into_response(),
        Err(StoreError::NotFinished { .. }) => problem(
            &service,
            asker.viewer,
            StatusCode::CONFLICT,
            &format!("Run #{id} is not finished; cancel it first."),
        ),
        Err(e) => store_problem(&service, asker.viewer, &e),
    }
}

// A job's log.

#[derive(Debug, Deserialize)]
struct AttemptQuery {
    attempt: Option<i64>,
}

/// Run `id`'s job `job` of `attempt` (default: the run's current one).
async fn find_job(
    service: &Service,
    id: RunId,
    job: &str,
    attempt: Option<i64>,
) -> Result<Option<(Run, Job)>, StoreError> {
    let run = service
        .store
        .run(id)
        .await?
        .ok_or(StoreError::NotFound(id))?;
    let attempt = attempt.unwrap_or(run.attempt);
    let found = service
        .store
        .jobs(id, Some(attempt))
        .await?
        .into_iter()
        .find(|j| j.name == job);
    Ok(found.map(|found| (run, found)))
}

async fn job_log(
    State(service): Shared,
    asker: Asker,
    Path((id, job)): Path<(RunId, String)>,
    Query(q): Query<AttemptQuery>,
) -> Response {
    if !asker.may_read {
        return sign_in_first(&format!("/runs/{id}/jobs/{job}"));
    }
    match find_job(&service, id, &job, q.attempt).await {
        Ok(Some((run, found))) => {
            let main = pages::log_page(&run, &found, &pages::job_status(found.status));
            page(&service, &format!("{job} · run #{id}"), asker.viewer, &main)
        }
        Ok(None) => problem(
            &service,
            asker.viewer,
            StatusCode::NOT_FOUND,
            &format!("Run #{id} has no job {job:?} in that attempt."),
        ),
        Err(e) => store_problem(&service, asker.viewer, &e),
    }
}

/// The attempt of job `job` of run `id` whose log `asker` reads
/// (`attempt`, or the run's current one); `Err` is the answer refusing it
/// (401, or 404 when there is no such job).
async fn readable_attempt(
    service: &Service,
    asker: &Asker,
    id: RunId,
    job: &str,
    attempt: Option<i64>,
) -> Result<i64, Box<Response>> {
    if !asker.may_read {
        return Err(Box::new(StatusCode::UNAUTHORIZED.into_response()));
    }
    match find_job(service, id, job, attempt).await {
        Ok(Some((_, found))) => Ok(found.attempt),
        Ok(None) => Err(Box::new(StatusCode::NOT_FOUND.into_response())),
        Err(e) => Err(Box::new(store_problem(service, asker.viewer, &e))),
    }
}

/// The byte offset to resume a log from: the `Last-Event-ID` of a
/// reconnecting `EventSource`, else 0.
fn resume_offset(headers: &HeaderMap) -> i64 {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .filter(|offset: &i64| *offset >= 0)
        .unwrap_or(0)
}

/// The most bytes of log in one event.
const LOG_PIECE: usize = 64 * 1024;

/// The length of the next piece of `data`: at most `max` bytes, ending
/// after a line end when one is in reach, else at a UTF-8 character
/// boundary.
fn next_piece(data: &[u8], max: usize) -> usize {
    if data.len() <= max {
        return data.len();
    }
    if let Some(newline) = data[..max].iter().rposition(|&b| b == b'\n') {
        return newline + 1;
    }
    // Not inside a character: before a byte that starts one.
    let mut cut = max;
    while cut > 1 && data[cut] & 0xC0 == 0x80 {
        cut -= 1;
    }
    cut
}

/// A piece of log for the page's script.
#[derive(serde::Serialize)]
struct LogPiece<'a> {
    text: &'a str,
}

async fn job_log_live(
    State(service): Shared,
    asker: Asker,
    headers: HeaderMap,
    Path((id, job)): Path<(RunId, String)>,
    Query(q): Query<AttemptQuery>,
) -> Response {
    let attempt = match readable_attempt(&service, &asker, id, &job, q.attempt).await {
        Ok(attempt) => attempt,
        Err(refused) => return *refused,
    };
    let from = resume_offset(&headers);
    let reads = Arc::clone(&service).follow_log(id, attempt, job.clone(), from);
    let stream = reads.flat_map(move |read| {
        let (service, job) = (Arc::clone(&service), job.clone());
        match read {
            Ok(read) => {
                let complete = read.complete;
                // The job's final status, for the page's header.
                let end = futures_util::stream::once(async move {
                    if !complete {
                        return None;
                    }
                    let status = find_job(&service, id, &job, Some(attempt))
                        .await
                        .ok()
                        .flatten()
                        .map(|(_, j)| pages::job_status(j.status).into_string())
                        .unwrap_or_default();
                    Some(Event::default().event("end").data(status))
                })
                .filter_map(std::future::ready);
                log_events(read.data, read.next_offset).chain(end).boxed()
            }
            Err(e) => {
                tracing::warn!("runs pages: {}", error_chain::one_line(&e));
                let failed = Event::default()
                    .event("failed")
                    .data("the store is unavailable");
                futures_util::stream::iter([failed]).boxed()
            }
        }
    });
    sse(stream.map(Ok::<_, Infallible>))
}

/// `data`, the log up to byte `next_offset`, as events of at most
/// [`LOG_PIECE`] bytes (the page shows the first lines of a long log
/// before the rest arrives), each encoded only when sent; each event's id
/// is the offset it ends at, where a reconnecting page resumes.
fn log_events(data: Vec<u8>, next_offset: i64) -> impl Stream<Item = Event> + Send {
    let mut end = next_offset - i64::try_from(data.len()).unwrap_or(0);
    let mut at = 0;
    let pieces = std::iter::from_fn(move || {
        let length = next_piece(&data[at..], LOG_PIECE);
        if length == 0 {
            return None;
        }
        let piece = &data[at..at + length];
        at += length;
        end += i64::try_from(length).unwrap_or(0);
        let text = String::from_utf8_lossy(piece);
        let event = Event::default()
            .id(end.to_string())
            .json_data(LogPiece { text: &text });
        // Serializing a string cannot fail.
        Some(event.ok())
    });
    futures_util::stream::iter(pieces.flatten())
}

async fn job_log_raw(
    State(service): Shared,
    asker: Asker,
    Path((id, job)): Path<(RunId, String)>,
    Query(q): Query<AttemptQuery>,
) -> Response {
    let attempt = match readable_attempt(&service, &asker, id, &job, q.attempt).await {
        Ok(attempt) => attempt,
        Err(refused) => return *refused,
    };
    match service.whole_log(id, attempt, &job).await {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!(
                        "attachment; filename=\"run-{id}-{attempt}-{}.log\"",
                        safe_file_name(&job)
                    ),
                ),
            ],
            bytes,
        )
            .into_response(),
        Err(e) => store_problem(&service, asker.viewer, &e),
    }
}

/// `name` with only letters, digits, `-`, `_` and `.` (the rest `_`).
fn safe_file_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

// Runners.

async fn runners(State(service): Shared, asker: Asker) -> Response {
    if !asker.may_read {
        return sign_in_first("/runners");
    }
    let running = RunFilter {
        status: Some(RunStatus::Running),
        limit: 200,
        ..RunFilter::default()
    };
    let running = match service.store.list_runs(&running).await {
        Ok(runs) => runs,
        Err(e) => return store_problem(&service, asker.viewer, &e),
    };
    let now = now_ms(&service);
    let lease_ms = i64::try_from(service.config.queue.lease.as_millis()).unwrap_or(i64::MAX);
    // Runner -> (last heard from, its runs): this server's own record of
    // claims and heartbeats, and every lease's last renewal (the lease
    // runs `lease` past it), which other replicas' runners leave too.
    let mut table: BTreeMap<String, (Option<i64>, Vec<&Run>)> = BTreeMap::new();
    for (owner, ago) in service.runners() {
        let at = now - i64::try_from(ago.as_millis()).unwrap_or(i64::MAX);
        table.entry(owner).or_default().0 = Some(at);
    }
    for run in &running {
        let Some(owner) = &run.lease_owner else {
            continue;
        };
        let entry = table.entry(owner.clone()).or_default();
        if let Some(expires) = run.lease_expires_at_ms {
            let renewed = expires.saturating_sub(lease_ms);
            entry.0 = Some(entry.0.map_or(renewed, |at| at.max(renewed)));
        }
        entry.1.push(run);
    }
    let mut rows: Vec<(String, Option<i64>, Vec<&Run>)> = table
        .into_iter()
        .map(|(name, (seen, runs))| (name, seen, runs))
        .collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    page(
        &service,
        "Runners",
        asker.viewer,
        &pages::runners_page(&rows, now),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn writes_from_another_site_are_refused() {
        let base = "https://ci.example";
        let ours = headers(&[("host", "ci.test:8080"), ("origin", "http://ci.test:8080")]);
        assert!(same_origin(&ours, base));
        let proxied = headers(&[("host", "10.0.0.5:8080"), ("origin", "https://ci.example")]);
        assert!(same_origin(&proxied, base));
        let theirs = headers(&[("host", "ci.test:8080"), ("origin", "https://evil.test")]);
        assert!(!same_origin(&theirs, base));
        let cross = headers(&[("host", "ci.test"), ("sec-fetch-site", "cross-site")]);
        assert!(!same_origin(&cross, base));
        let null = headers(&[("host", "ci.test"), ("origin", "null")]);
        assert!(!same_origin(&null, base));
    }

    #[test]
    fn the_sign_in_cookie_is_read_among_others() {
        let token = hex::encode("t0ken;=x");
        let cookies = headers(&[("cookie", &format!("a=b; {COOKIE}={token}; c=d"))]);
        assert_eq!(cookie_token(&cookies).as_deref(), Some("t0ken;=x"));
        assert_eq!(cookie_token(&headers(&[("cookie", "a=b")])), None);
    }

    #[test]
    fn sign_in_only_returns_to_this_site() {
        assert_eq!(local_path(Some("/runs/3")), "/runs/3");
        assert_eq!(local_path(Some("//evil.test/x")), "/runs");
        assert_eq!(local_path(Some("https://evil.test")), "/runs");
        assert_eq!(local_path(Some("/\\evil.test")), "/runs");
        assert_eq!(local_path(None), "/runs");
    }

    #[test]
    fn log_pieces_end_at_lines_or_characters() {
        assert_eq!(next_piece(b"ab\ncd\nef", 5), 3);
        assert_eq!(next_piece(b"ef", 5), 2);
        assert_eq!(next_piece("ééé".as_bytes(), 3), 2);
        assert_eq!(next_piece(b"", 4), 0);
    }

    #[tokio::test]
    async fn log_events_resume_at_their_ends() {
        let events: Vec<Event> = log_events(b"one\ntwo\n".to_vec(), 108).collect().await;
        assert_eq!(events.len(), 1);
        let data = b"x".repeat(LOG_PIECE + 10);
        let events: Vec<Event> = log_events(data, i64::try_from(LOG_PIECE).unwrap() + 10)
            .collect()
            .await;
        assert_eq!(events.len(), 2);
    }

    #[test]
    fn unknown_statuses_are_named() {
        let q = RunsQuery {
            status: Some("paused".into()),
            ..RunsQuery::default()
        };
        assert!(q.filter().unwrap_err().contains("paused"));
        let q = RunsQuery {
            branch: Some(" ".into()),
            status: Some("failed".into()),
            ..RunsQuery::default()
        };
        let filter = q.filter().unwrap();
        assert_eq!(
            (filter.branch, filter.status),
            (None, Some(RunStatus::Failed))
        );
    }
}
