//! The runs pages' HTML (maud): the layout, the runs table, a run's
//! details and jobs, a job's log page, the runners and the sign-in form.
//! Statuses always carry their name and an icon, never colour alone; the
//! parts that live updates replace (the runs table's rows, a run's
//! details) are rendered by the same functions as the full pages.

use std::fmt::Write as _;

use maud::{DOCTYPE, Markup, html};

use crate::server::config::Repository;
use crate::server::forge::ForgeKind;
use crate::server::store::{Job, JobStatus, Run, RunStatus};

/// Who is looking: whether they may write (signed in) and whether a sign-in
/// link makes sense.
#[derive(Debug, Clone, Copy)]
pub struct Viewer {
    pub signed_in: bool,
}

/// A page around `main`.
pub fn layout(title: &str, viewer: Viewer, now_ms: i64, main: &Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) " · executor" }
                link rel="stylesheet" href=(super::STYLE_PATH);
                script src=(super::SCRIPT_PATH) defer {}
            }
            body data-now=(now_ms) {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    nav aria-label="Main" {
                        a.brand href="/runs" { "executor" }
                        ul {
                            li { a href="/runs" { "Runs" } }
                            li { a href="/runners" { "Runners" } }
                            li {
                                @if viewer.signed_in {
                                    form method="post" action="/logout" {
                                        button.link type="submit" { "Sign out" }
                                    }
                                } @else {
                                    a href="/login" { "Sign in" }
                                }
                            }
                        }
                    }
                }
                main #main { (main) }
            }
        }
    }
}

/// A status: an icon (hidden from screen readers) and its name.
fn status_badge(name: &str) -> Markup {
    let icon = match name {
        "queued" => "◷",
        "running" => "▶",
        "succeeded" => "✓",
        "failed" => "✗",
        "canceled" => "⊘",
        "skipped" => "↷",
        _ => "?",
    };
    html! {
        span class={ "status status-" (name) } {
            span.icon aria-hidden="true" { (icon) }
            " " (name)
        }
    }
}

/// The badge of a run's status.
pub fn run_status(status: RunStatus) -> Markup {
    status_badge(status.as_str())
}

/// The badge of a job's status.
pub fn job_status(status: JobStatus) -> Markup {
    status_badge(status.as_str())
}

/// `ms` as `YYYY-MM-DD HH:MM:SS UTC` in a `<time>` whose `datetime` is
/// RFC 3339.
fn when(ms: i64) -> Markup {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)) else {
        return html! { (ms) };
    };
    let date = format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day());
    let clock = clock(ms);
    html! { time datetime={ (date) "T" (clock) "Z" } { (date) " " (clock) " UTC" } }
}

/// The UTC time of day of `ms`: `HH:MM:SS`.
fn clock(ms: i64) -> String {
    let secs = ms.div_euclid(1000).rem_euclid(86_400);
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// A duration as `1h 02m 03s`, `2m 03s` or `3.4s`.
pub fn duration_text(ms: i64) -> String {
    let ms = ms.max(0);
    let secs = ms / 1000;
    let mut out = String::new();
    if secs >= 3600 {
        let _ = write!(
            out,
            "{}h {:02}m {:02}s",
            secs / 3600,
            secs % 3600 / 60,
            secs % 60
        );
    } else if secs >= 60 {
        let _ = write!(out, "{}m {:02}s", secs / 60, secs % 60);
    } else {
        let _ = write!(out, "{}.{}s", secs, ms % 1000 / 100);
    }
    out
}

/// How long something took once finished; while running, when it started
/// (the script ticks the time since from `data-since`, so the HTML of a
/// running run stays the same and live updates send only changes).
fn took(started: Option<i64>, finished: Option<i64>) -> Markup {
    match (started, finished) {
        (Some(start), Some(end)) => html! { (duration_text(end - start)) },
        (Some(start), None) => html! {
            span data-since=(start) { "since " (clock(start)) }
        },
        _ => html! { span.muted { "–" } },
    }
}

/// The short form of a commit id.
fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

/// A ref without `refs/heads/` or `refs/tags/`.
fn ref_name(git_ref: &str) -> &str {
    git_ref
        .strip_prefix("refs/heads/")
        .or_else(|| git_ref.strip_prefix("refs/tags/"))
        .unwrap_or(git_ref)
}

/// The first line of the head commit's message, when the trigger had one.
fn commit_title(run: &Run) -> Option<&str> {
    run.trigger
        .get("message")
        .and_then(serde_json::Value::as_str)
        .and_then(|m| m.lines().next())
        .filter(|l| !l.trim().is_empty())
}

/// The commit's page on its forge, from the repository's HTTP(S) clone URL.
pub fn commit_url(clone_url: &str, forge: ForgeKind, sha: &str) -> Option<String> {
    let web = clone_url.trim_end_matches('/');
    if !(web.starts_with("https://") || web.starts_with("http://")) {
        return None;
    }
    let web = web.strip_suffix(".git").unwrap_or(web);
    Some(match forge {
        ForgeKind::GitLab => format!("{web}/-/commit/{sha}"),
        ForgeKind::GitHub | ForgeKind::Gitea | ForgeKind::Forgejo => {
            format!("{web}/commit/{sha}")
        }
    })
}

/// What the runs page filters by.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub repository: Option<String>,
    pub branch: Option<String>,
    pub status: Option<RunStatus>,
}

impl Filter {
    /// The filter as a query string (`?a=b&...`, or empty).
    pub fn query(&self) -> String {
        let mut pairs = url::form_urlencoded::Serializer::new(String::new());
        if let Some(repository) = &self.repository {
            pairs.append_pair("repository", repository);
        }
        if let Some(branch) = &self.branch {
            pairs.append_pair("branch", branch);
        }
        if let Some(status) = self.status {
            pairs.append_pair("status", status.as_str());
        }
        let query = pairs.finish();
        if query.is_empty() {
            query
        } else {
            format!("?{query}")
        }
    }
}

/// The runs page: the filter form, the table (live on the first page) and
/// a link to older runs.
pub fn runs_page(
    viewer: Viewer,
    filter: &Filter,
    repositories: &[String],
    runs: &[Run],
    older: Option<String>,
    live: bool,
) -> Markup {
    html! {
        h1 { "Runs" }
        form.filters method="get" action="/runs" role="search" aria-label="Filter runs" {
            div.field {
                label for="f-repository" { "Repository" }
                select #f-repository name="repository" {
                    option value="" { "All" }
                    @for name in repositories {
                        option value=(name) selected[filter.repository.as_deref() == Some(name)] { (name) }
                    }
                }
            }
            div.field {
                label for="f-branch" { "Branch" }
                input #f-branch name="branch" type="text" value=(filter.branch.as_deref().unwrap_or(""));
            }
            div.field {
                label for="f-status" { "Status" }
                select #f-status name="status" {
                    option value="" { "All" }
                    @for status in RunStatus::ALL {
                        option value=(status.as_str()) selected[filter.status == Some(*status)] { (status.as_str()) }
                    }
                }
            }
            button type="submit" { "Filter" }
        }
        @if viewer.signed_in {
            details.start {
                summary { "Start a run" }
                form.start method="post" action="/runs" {
                    div.field {
                        label for="s-repository" { "Repository" }
                        select #s-repository name="repository" required {
                            @for name in repositories { option value=(name) { (name) } }
                        }
                    }
                    div.field {
                        label for="s-ref" { "Branch, tag or ref" }
                        input #s-ref name="ref" type="text" required placeholder="main";
                    }
                    button type="submit" { "Start" }
                }
            }
        }
        div.table-wrap {
            table.runs {
                caption.visually-hidden { "Runs, newest first" }
                (head(&["Run", "Repository", "Ref", "Commit", "Event", "Status", "Duration", "When"]))
                @if live {
                    tbody #runs-rows data-live={ "/runs/live" (filter.query()) } { (run_rows(runs)) }
                } @else {
                    tbody #runs-rows { (run_rows(runs)) }
                }
            }
        }
        @if let Some(older) = older {
            p { a href=(older) rel="next" { "Older runs" } }
        }
    }
}

/// A table's header row: `columns`' names.
fn head(columns: &[&str]) -> Markup {
    html! {
        thead {
            tr {
                @for column in columns { th scope="col" { (column) } }
            }
        }
    }
}

/// The rows of the runs table (what live updates replace).
pub fn run_rows(runs: &[Run]) -> Markup {
    html! {
        @if runs.is_empty() {
            tr { td colspan="8" { "No runs yet." } }
        }
        @for run in runs {
            tr data-run=(run.id) data-status=(run.status.as_str()) {
                th scope="row" { a href={ "/runs/" (run.id) } { "#" (run.id) } }
                td { (run.repository) }
                td { code { (ref_name(&run.git_ref)) } }
                td {
                    code { (short(&run.commit_sha)) }
                    @if let Some(title) = commit_title(run) { " " span.title { (title) } }
                }
                td { (run.event) }
                td { (run_status(run.status)) }
                td { (took(run.started_at_ms, run.finished_at_ms)) }
                td { (when(run.created_at_ms)) }
            }
        }
    }
}

/// The run page's live part: its details, its actions and its jobs by
/// stage.
pub fn run_details(run: &Run, jobs: &[Job], repo: Option<&Repository>, viewer: Viewer) -> Markup {
    let commit = repo.and_then(|r| commit_url(&r.clone_url, r.forge, &run.commit_sha));
    html! {
        p.run-status { "Status: " (run_status(run.status))
            @if run.cancel_requested && !run.status.is_finished() { " (cancel requested)" }
        }
        @if let Some(reason) = &run.status_reason { p { (reason) } }
        dl.facts {
            dt { "Repository" } dd { (run.repository) }
            dt { "Ref" } dd { code { (run.git_ref) } }
            dt { "Commit" } dd {
                @if let Some(url) = &commit {
                    a href=(url) { code { (short(&run.commit_sha)) } }
                } @else {
                    code { (short(&run.commit_sha)) }
                }
                @if let Some(title) = commit_title(run) { " " (title) }
            }
            dt { "Event" } dd { (run.event) @if run.fork { " (from a fork)" } }
            dt { "Attempt" } dd { (run.attempt) }
            dt { "Queued" } dd { (when(run.created_at_ms)) }
            dt { "Duration" } dd { (took(run.started_at_ms, run.finished_at_ms)) }
            @if let Some(of) = run.retry_of {
                dt { "Retry of" } dd { a href={ "/runs/" (of) } { "#" (of) } }
            }
        }
        div.actions {
            @if !viewer.signed_in {
                p { a href={ "/login?next=/runs/" (run.id) } { "Sign in" } " to cancel or retry." }
            } @else if !run.status.is_finished() {
                form method="post" action={ "/runs/" (run.id) "/cancel" } {
                    button.danger type="submit" disabled[run.cancel_requested] { "Cancel run" }
                }
            } @else {
                form method="post" action={ "/runs/" (run.id) "/retry" } {
                    button type="submit" { "Retry run" }
                }
            }
        }
        h2 { "Jobs" }
        @if jobs.is_empty() {
            p { "No jobs yet: the run has not started." }
        }
        @for (stage, stage_jobs) in by_stage(jobs) {
            section.stage aria-labelledby={ "stage-" (stage) } {
                h3 id={ "stage-" (stage) } { "Stage " (stage) }
                div.table-wrap {
                    table.jobs {
                        (head(&["Job", "Status", "Duration", "Attempt", "Image"]))
                        tbody {
                            @for job in stage_jobs {
                                tr data-job=(job.name) data-status=(job.status.as_str()) {
                                    th scope="row" {
                                        a href={ "/runs/" (run.id) "/jobs/" (job.name) "?attempt=" (job.attempt) } { (job.name) }
                                    }
                                    td { (job_status(job.status)) }
                                    td { (took(job.started_at_ms, job.finished_at_ms)) }
                                    td { (job.attempt) }
                                    td {
                                        @if let Some(image) = &job.image_digest {
                                            code.image { (image) }
                                            " "
                                            button.copy type="button" data-copy=(image) aria-label={ "Copy the image of " (job.name) } { "Copy" }
                                        } @else {
                                            span.muted { "–" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Jobs grouped by stage, stages in the order their first job comes (the
/// runner queues jobs in the pipeline's `needs` order).
fn by_stage(jobs: &[Job]) -> Vec<(&str, Vec<&Job>)> {
    let mut stages: Vec<(&str, Vec<&Job>)> = Vec::new();
    for job in jobs {
        match stages.iter_mut().find(|(stage, _)| *stage == job.stage) {
            Some((_, list)) => list.push(job),
            None => stages.push((&job.stage, vec![job])),
        }
    }
    stages
}

/// The run page.
pub fn run_page(run: &Run, details: &Markup) -> Markup {
    html! {
        h1 { "Run #" (run.id) " · " (run.repository) " " code { (ref_name(&run.git_ref)) } }
        @if run.status.is_finished() {
            div #run-details { (details) }
        } @else {
            div #run-details data-live={ "/runs/" (run.id) "/live" } { (details) }
        }
    }
}

/// A job's log page: its status, the raw log's link and the viewer the
/// script fills from `data-live`.
pub fn log_page(run: &Run, job: &Job, status: &Markup) -> Markup {
    let base = format!("/runs/{}/jobs/{}", run.id, job.name);
    html! {
        nav aria-label="Breadcrumb" {
            a href={ "/runs/" (run.id) } { "Run #" (run.id) } " › " (job.name)
        }
        h1 { "Job " (job.name) }
        p { "Status: " span #job-status aria-live="polite" { (status) } " · attempt " (job.attempt) " · stage " (job.stage) }
        p.log-tools {
            a href={ (base) "/log.txt?attempt=" (job.attempt) } download={ (job.name) ".log" } { "Download raw log" }
            " "
            label { input #log-follow type="checkbox" checked; " Follow the end" }
            " "
            span #log-count aria-live="polite" {}
        }
        noscript { p { "The log viewer needs JavaScript; the raw log link works without." } }
        div #log.log role="log" aria-label={ "Log of job " (job.name) } tabindex="0"
            data-live={ (base) "/live?attempt=" (job.attempt) } {
            div.log-inner { div.log-window {} }
        }
    }
}

/// The runners page: every runner heard from, what it runs, when it was
/// last heard from.
pub fn runners_page(runners: &[(String, Option<i64>, Vec<&Run>)], now_ms: i64) -> Markup {
    html! {
        h1 { "Runners" }
        p { "Runners heard from within a lease period, most recent first." }
        div.table-wrap {
            table.runners {
                (head(&["Runner", "Running", "Last heartbeat"]))
                tbody {
                    @if runners.is_empty() {
                        tr { td colspan="3" { "No runner connected." } }
                    }
                    @for (name, seen, runs) in runners {
                        tr {
                            th scope="row" { code { (name) } }
                            td {
                                @if runs.is_empty() { span.muted { "idle" } }
                                @for (i, run) in runs.iter().enumerate() {
                                    @if i > 0 { ", " }
                                    a href={ "/runs/" (run.id) } { "#" (run.id) } " " (run.repository)
                                }
                            }
                            td {
                                @match seen {
                                    Some(at) => { (duration_text(now_ms - at)) " ago" }
                                    None => span.muted { "unknown" },
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The sign-in form; `failed` after a wrong token.
pub fn login_page(next: &str, failed: bool) -> Markup {
    html! {
        h1 { "Sign in" }
        p { "Sign in with an API token of this server (an " code { "[[api_token]]" } " of its executor.toml) to cancel and retry runs." }
        @if failed {
            p.error role="alert" { "That token is not one of this server's API tokens." }
        }
        form.login method="post" action="/login" {
            input type="hidden" name="next" value=(next);
            div.field {
                label for="token" { "API token" }
                input #token name="token" type="password" autocomplete="current-password" required;
            }
            button type="submit" { "Sign in" }
        }
    }
}

/// A page saying what went wrong.
pub fn problem(message: &str) -> Markup {
    html! {
        h1 { "Not available" }
        p { (message) }
        p { a href="/runs" { "All runs" } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, stage: &str) -> Job {
        Job {
            run_id: 1,
            attempt: 1,
            name: name.into(),
            stage: stage.into(),
            status: JobStatus::Queued,
            queued_at_ms: 0,
            started_at_ms: None,
            finished_at_ms: None,
            duration_ms: None,
            image_digest: None,
        }
    }

    #[test]
    fn jobs_group_by_stage_in_first_seen_order() {
        let jobs = [
            job("a", "build"),
            job("b", "test"),
            job("c", "build"),
            job("d", "deploy"),
        ];
        let stages: Vec<(&str, Vec<&str>)> = by_stage(&jobs)
            .into_iter()
            .map(|(s, j)| (s, j.iter().map(|j| j.name.as_str()).collect()))
            .collect();
        assert_eq!(
            stages,
            [
                ("build", vec!["a", "c"]),
                ("test", vec!["b"]),
                ("deploy", vec!["d"])
            ]
        );
    }

    #[test]
    fn times_are_utc_with_a_machine_readable_datetime() {
        assert_eq!(
            when(86_400_000 + 3_723_000).into_string(),
            r#"<time datetime="1970-01-02T01:02:03Z">1970-01-02 01:02:03 UTC</time>"#
        );
    }

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(duration_text(3_456), "3.4s");
        assert_eq!(duration_text(125_000), "2m 05s");
        assert_eq!(duration_text(3_725_000), "1h 02m 05s");
        assert_eq!(duration_text(-5), "0.0s");
    }

    #[test]
    fn commit_links_follow_each_forge() {
        assert_eq!(
            commit_url("https://github.com/acme/app.git", ForgeKind::GitHub, "abc").as_deref(),
            Some("https://github.com/acme/app/commit/abc")
        );
        assert_eq!(
            commit_url("https://gitlab.example/group/app", ForgeKind::GitLab, "abc").as_deref(),
            Some("https://gitlab.example/group/app/-/commit/abc")
        );
        assert_eq!(
            commit_url("git@github.com:acme/app.git", ForgeKind::GitHub, "abc"),
            None
        );
    }

    #[test]
    fn statuses_carry_text_and_an_icon() {
        let html = run_status(RunStatus::Failed).into_string();
        assert!(html.contains("failed") && html.contains("✗"), "{html}");
        let filter = Filter {
            repository: Some("acme/app".into()),
            branch: None,
            status: Some(RunStatus::Running),
        };
        assert_eq!(filter.query(), "?repository=acme%2Fapp&status=running");
        assert_eq!(Filter::default().query(), "");
    }
}
