//! The runner protocol's client: `executor runner` reaching its server
//! over HTTP with its bearer token. 409 means fenced; 204 to a claim means
//! no work came while the server waited.

use std::time::Duration;

use reqwest::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::protocol::{
    Assignment, BeatAnswer, FinishRequest, JobEventWire, JobReportWire, LeaseRequest, LogAnswer,
    LogChunk, RUNNER_ID_HEADER, paths,
};
use super::{Coordinator, Result, RunnerError};
use crate::server::config::Secret;
use crate::server::store::Lease;

/// A server reached over HTTP.
pub struct HttpCoordinator {
    base: String,
    token: Secret,
    id: String,
    http: reqwest::Client,
}

impl HttpCoordinator {
    /// A client of the server at `base` (`http://HOST:PORT`), as runner
    /// instance `id`, with `token`.
    pub fn new(base: &str, token: Secret, id: String) -> Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("executor-runner/", env!("CARGO_PKG_VERSION")))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|source| RunnerError::Http {
                url: base.to_owned(),
                source,
            })?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            token,
            id,
            http,
        })
    }

    /// POSTs `body` to `path`; `None` for 204.
    async fn post<B: Serialize + Sync, A: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        lease: Option<&Lease>,
    ) -> Result<Option<A>> {
        let url = format!("{}{path}", self.base);
        let http = |source| RunnerError::Http {
            url: url.clone(),
            source,
        };
        let response = self
            .http
            .post(&url)
            .bearer_auth(self.token.expose())
            .header(RUNNER_ID_HEADER, &self.id)
            .json(body)
            .send()
            .await
            .map_err(http)?;
        match response.status() {
            StatusCode::NO_CONTENT => Ok(None),
            StatusCode::CONFLICT => {
                let (run, attempt) = lease.map_or((0, 0), |l| (l.run_id, l.attempt));
                Err(RunnerError::Fenced { run, attempt })
            }
            status if status.is_success() => response.json().await.map(Some).map_err(http),
            status => Err(RunnerError::Status {
                url: url.clone(),
                status: status.as_u16(),
                body: response.text().await.unwrap_or_default(),
            }),
        }
    }
}

impl Coordinator for HttpCoordinator {
    async fn claim(&self) -> Result<Option<Assignment>> {
        self.post(paths::CLAIM, &serde_json::json!({}), None).await
    }

    async fn heartbeat(&self, lease: &Lease) -> Result<bool> {
        let answer: Option<BeatAnswer> = self
            .post(
                paths::HEARTBEAT,
                &LeaseRequest {
                    lease: lease.clone(),
                },
                Some(lease),
            )
            .await?;
        Ok(answer.is_some_and(|a| a.cancel_requested))
    }

    async fn job_event(&self, lease: &Lease, job: &str, event: JobEventWire) -> Result<()> {
        let report = JobReportWire {
            lease: lease.clone(),
            job: job.to_owned(),
            event,
        };
        self.post::<_, serde_json::Value>(paths::EVENTS, &report, Some(lease))
            .await
            .map(|_| ())
    }

    async fn log(&self, lease: &Lease, job: &str, offset: i64, data: String) -> Result<i64> {
        let chunk = LogChunk {
            lease: lease.clone(),
            job: job.to_owned(),
            offset,
            data,
        };
        let answer: Option<LogAnswer> = self.post(paths::LOGS, &chunk, Some(lease)).await?;
        Ok(answer.map_or(offset, |a| a.end))
    }

    async fn finish(&self, request: FinishRequest) -> Result<()> {
        let lease = request.lease.clone();
        self.post::<_, serde_json::Value>(paths::FINISH, &request, Some(&lease))
            .await
            .map(|_| ())
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        self.post::<_, serde_json::Value>(
            paths::RELEASE,
            &LeaseRequest {
                lease: lease.clone(),
            },
            Some(lease),
        )
        .await
        .map(|_| ())
    }
}
