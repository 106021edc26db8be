//! The slurmrestd client: one per SLURM cluster, with its own connection pool, rate cap,
//! retries, negotiated API version and credentials.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use tokio::sync::RwLock;
use tracing::{debug, warn};

use super::SlurmApi;
use super::auth::TokenSource;
use super::error::SlurmError;
use super::metrics::SlurmMetrics;
use super::model::{JobInfo, JobSpec, JobStateEntry, PingInfo};
use super::ratelimit::RateLimiter;
use super::version::{self, ApiVersion, VersionChoice};
use super::wire::{self, errno};

/// How to reach one slurmrestd.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Name for logs and metrics (the SlurmCluster's name).
    pub cluster: String,
    /// Base URL, e.g. `http://127.0.0.1:6820`.
    pub url: String,
    pub version: VersionChoice,
    pub auth: TokenSource,
    /// SLURM user for reads that act for nobody in particular (ping, batched states).
    pub service_user: String,
    pub requests_per_second: u32,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// PEM CA bundle for https slurmrestd with a private CA.
    pub ca_pem: Option<Vec<u8>>,
}

impl ClientConfig {
    pub fn new(
        cluster: impl Into<String>,
        url: impl Into<String>,
        auth: TokenSource,
        service_user: impl Into<String>,
    ) -> Self {
        Self {
            cluster: cluster.into(),
            url: url.into(),
            version: VersionChoice::Auto,
            auth,
            service_user: service_user.into(),
            requests_per_second: 5,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            ca_pem: None,
        }
    }
}

/// A slurmrestd client (see [`SlurmApi`] for the operations).
pub struct RestClient {
    cfg: ClientConfig,
    http: reqwest::Client,
    limiter: RateLimiter,
    negotiated: RwLock<Option<Negotiated>>,
    metrics: SlurmMetrics,
    sent: AtomicU64,
}

#[derive(Clone, Debug)]
struct Negotiated {
    version: ApiVersion,
    served: Vec<String>,
}

/// An HTTP answer: status and body.
struct Answer {
    status: StatusCode,
    body: bytes::Bytes,
}

impl RestClient {
    /// Builds the client (no request is made yet).
    pub fn new(cfg: ClientConfig, metrics: SlurmMetrics) -> Result<Self, SlurmError> {
        crate::tls::ensure_crypto_provider();
        let mut builder = reqwest::Client::builder()
            // slurmrestd limits connections: keep few idle ones, and not for long.
            .pool_max_idle_per_host(2)
            .pool_idle_timeout(Duration::from_secs(30))
            .connect_timeout(cfg.connect_timeout)
            .timeout(cfg.request_timeout)
            .user_agent(concat!("slurmlab/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &cfg.ca_pem {
            for cert in
                reqwest::Certificate::from_pem_bundle(pem).map_err(|e| SlurmError::Unreachable {
                    url: cfg.url.clone(),
                    detail: format!("the CA bundle in restApi.caSecretRef is not valid PEM: {e}"),
                })?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| SlurmError::Unreachable {
            url: cfg.url.clone(),
            detail: format!("cannot build an HTTP client: {e}"),
        })?;
        let burst = cfg.requests_per_second.max(1) * 2;
        Ok(Self {
            limiter: RateLimiter::new(cfg.requests_per_second, burst),
            cfg,
            http,
            negotiated: RwLock::new(None),
            metrics,
            sent: AtomicU64::new(0),
        })
    }

    pub fn metrics(&self) -> &SlurmMetrics {
        &self.metrics
    }

    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// HTTP requests sent so far (retries included).
    pub fn requests_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Replaces the credentials' secret (token or key) after the Secret changed.
    pub fn replace_secret(&self, secret: Vec<u8>) {
        self.cfg.auth.replace(secret);
    }

    /// The API version in use, negotiated from `/openapi/v3` on first use.
    pub async fn api_version(&self) -> Result<ApiVersion, SlurmError> {
        Ok(self.negotiate().await?.version)
    }

    /// The versions slurmrestd serves (negotiating first if needed).
    pub async fn served_versions(&self) -> Result<Vec<String>, SlurmError> {
        Ok(self.negotiate().await?.served)
    }

    /// Forgets the negotiated version (e.g. after slurmrestd was upgraded).
    pub async fn renegotiate(&self) {
        *self.negotiated.write().await = None;
    }

    async fn negotiate(&self) -> Result<Negotiated, SlurmError> {
        if let Some(n) = self.negotiated.read().await.clone() {
            return Ok(n);
        }
        let answer = self
            .send(
                "openapi",
                Method::GET,
                "/openapi/v3",
                &self.cfg.service_user,
                None,
            )
            .await?;
        let doc: serde_json::Value = self.parse("openapi", &answer)?;
        let paths = doc
            .get("paths")
            .and_then(|p| p.as_object())
            .ok_or_else(|| SlurmError::Malformed {
                what: "GET /openapi/v3".into(),
                path: "paths".into(),
                detail: "no paths object".into(),
            })?;
        let served = version::served_versions(paths.keys().map(String::as_str));
        let version = version::negotiate(self.cfg.version, &served)?;
        debug!(cluster = %self.cfg.cluster, %version, ?served, "negotiated slurmrestd API version");
        let n = Negotiated { version, served };
        *self.negotiated.write().await = Some(n.clone());
        Ok(n)
    }

    /// One logical request: rate-capped, counted and timed per HTTP attempt. Idempotent
    /// requests are retried on connect errors and 502/503/504; a POST (a submit) never
    /// is: slurmctld may have accepted the job before the answer was lost; the controller
    /// claimed the attempt in the allocation's status first, so its next reconcile looks
    /// the job up and adopts what got through.
    async fn send(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        user: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, SlurmError> {
        let url = format!("{}{}", self.cfg.url.trim_end_matches('/'), path);
        let attempt = || async {
            self.limiter.acquire().await;
            let (user_name, token) = self.cfg.auth.credentials(user);
            let mut req = self
                .http
                .request(method.clone(), &url)
                .header("X-SLURM-USER-NAME", user_name)
                .header("X-SLURM-USER-TOKEN", token);
            if let Some(body) = body {
                req = req.json(body);
            }
            self.sent.fetch_add(1, Ordering::Relaxed);
            let started = Instant::now();
            let result = match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let body = resp.bytes().await;
                    if let Ok(b) = &body {
                        self.metrics.received(&self.cfg.cluster, operation, b.len());
                    }
                    match body {
                        Ok(body) if matches!(status.as_u16(), 502..=504) => {
                            Err(SlurmError::Server {
                                status: status.as_u16(),
                                detail: excerpt(&body),
                            })
                        }
                        Ok(body) => Ok(Answer { status, body }),
                        Err(e) => Err(self.transport_error(&e)),
                    }
                }
                Err(e) => Err(self.transport_error(&e)),
            };
            let outcome = match &result {
                Ok(a) if a.status.is_success() => "ok",
                Ok(a) if a.status == StatusCode::UNAUTHORIZED || a.status.as_u16() == 511 => {
                    "auth_refused"
                }
                Ok(_) => "rejected",
                Err(e) => e.kind(),
            };
            self.metrics
                .observe(&self.cfg.cluster, operation, outcome, started.elapsed());
            result
        };
        attempt
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_delay(Duration::from_secs(3))
                    .with_max_times(if method == Method::POST { 0 } else { 3 })
                    .with_jitter(),
            )
            .when(SlurmError::is_retryable)
            .notify(|e, wait| warn!(cluster = %self.cfg.cluster, operation, error = %e, ?wait, "slurmrestd request failed; retrying"))
            .await
    }

    fn transport_error(&self, e: &reqwest::Error) -> SlurmError {
        if e.is_timeout() {
            SlurmError::Timeout {
                url: self.cfg.url.clone(),
                seconds: self.cfg.request_timeout.as_secs(),
            }
        } else {
            // The source chain says what really failed (refused, DNS, TLS).
            let mut detail = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                detail = format!("{detail}: {s}");
                source = s.source();
            }
            SlurmError::Unreachable {
                url: self.cfg.url.clone(),
                detail,
            }
        }
    }

    /// Decodes a body, reporting the path of the first field that did not fit.
    fn parse<T: DeserializeOwned>(&self, what: &str, answer: &Answer) -> Result<T, SlurmError> {
        let de = &mut serde_json::Deserializer::from_slice(&answer.body);
        serde_path_to_error::deserialize(de).map_err(|e| SlurmError::Malformed {
            what: what.to_owned(),
            path: e.path().to_string(),
            detail: format!("{} (body starts: {})", e.inner(), excerpt(&answer.body)),
        })
    }

    /// Maps non-success answers to typed errors; `Ok(())` for 2xx.
    fn check(&self, user: &str, answer: &Answer) -> Result<(), SlurmError> {
        let status = answer.status.as_u16();
        if answer.status.is_success() {
            return Ok(());
        }
        let envelope: Option<wire::Envelope> = serde_json::from_slice(&answer.body).ok();
        let problems = envelope.map(|e| e.errors).unwrap_or_default();
        if status == 401 || status == 511 || problems.iter().any(|p| p.error_number == errno::AUTH)
        {
            let detail = if problems.is_empty() {
                excerpt(&answer.body)
            } else {
                super::error::describe(&problems)
            };
            return Err(SlurmError::AuthRefused {
                user: user.to_owned(),
                status,
                detail,
            });
        }
        if problems.is_empty() {
            return Err(SlurmError::Server {
                status,
                detail: excerpt(&answer.body),
            });
        }
        Err(SlurmError::Rejected { status, problems })
    }

    fn path(&self, version: ApiVersion, rest: &str) -> String {
        format!("/slurm/{version}/{rest}")
    }
}

/// Whether an answer carries SLURM's "invalid job id" (2017). Versions disagree on the
/// HTTP status that comes with it (404 from 24.11 on, 500 before).
fn names_unknown_job(answer: &Answer) -> bool {
    serde_json::from_slice::<wire::Envelope>(&answer.body).is_ok_and(|env| {
        env.errors
            .iter()
            .any(|p| p.error_number == errno::INVALID_JOB_ID)
    })
}

/// The first 200 characters of a body, for error messages.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.chars().count() > 200 {
        format!("{}…", text.chars().take(200).collect::<String>())
    } else {
        text.to_owned()
    }
}

#[async_trait]
impl SlurmApi for RestClient {
    fn cluster(&self) -> &str {
        &self.cfg.cluster
    }

    async fn ping(&self) -> Result<PingInfo, SlurmError> {
        let v = self.api_version().await?;
        let user = &self.cfg.service_user;
        let answer = self
            .send("ping", Method::GET, &self.path(v, "ping"), user, None)
            .await?;
        self.check(user, &answer)?;
        let info = self
            .parse::<wire::PingResponse>("GET ping", &answer)?
            .into_info();
        if !info.responding {
            // slurmctld "down" in a ping is also what a rejected token looks like; an
            // authenticated call tells the two apart (a bad token gets 511 there).
            let probe = self
                .send(
                    "job_states",
                    Method::GET,
                    &self.path(v, "jobs/state/?job_id=999999"),
                    user,
                    None,
                )
                .await?;
            self.check(user, &probe)?;
        }
        Ok(info)
    }

    async fn submit(&self, user: &str, spec: &JobSpec) -> Result<u64, SlurmError> {
        let v = self.api_version().await?;
        let body = wire::submit_body(v, spec);
        let answer = self
            .send(
                "submit",
                Method::POST,
                &self.path(v, "job/submit"),
                user,
                Some(&body),
            )
            .await?;
        self.check(user, &answer)?;
        let resp: wire::SubmitResponse = self.parse("POST job/submit", &answer)?;
        match resp.job_id {
            Some(id) if resp.envelope.errors.is_empty() => Ok(id),
            _ => Err(SlurmError::Rejected {
                status: answer.status.as_u16(),
                problems: resp.envelope.errors,
            }),
        }
    }

    async fn job(&self, job_id: u64) -> Result<JobInfo, SlurmError> {
        let v = self.api_version().await?;
        let user = &self.cfg.service_user;
        let answer = self
            .send(
                "job",
                Method::GET,
                &self.path(v, &format!("job/{job_id}")),
                user,
                None,
            )
            .await?;
        if names_unknown_job(&answer) {
            return Err(SlurmError::UnknownJob { job_id });
        }
        self.check(user, &answer)?;
        let resp: wire::JobsResponse = self.parse(&format!("GET job/{job_id}"), &answer)?;
        resp.jobs
            .into_iter()
            .find(|j| j.job_id == job_id)
            .map(wire::Job::into_info)
            .ok_or(SlurmError::UnknownJob { job_id })
    }

    async fn job_states(&self, job_ids: &[u64]) -> Result<Vec<JobStateEntry>, SlurmError> {
        if job_ids.is_empty() {
            return Ok(vec![]);
        }
        let v = self.api_version().await?;
        let user = &self.cfg.service_user;
        let mut entries = Vec::with_capacity(job_ids.len());
        // The spec says `job_id` is a CSV list, but slurmrestd 24.11 and 26.05 refuse
        // commas (400/500) and accept the parameter repeated. Chunks keep URLs short.
        for chunk in job_ids.chunks(200) {
            let query: Vec<String> = chunk.iter().map(|id| format!("job_id={id}")).collect();
            let path = self.path(v, &format!("jobs/state/?{}", query.join("&")));
            let answer = self
                .send("job_states", Method::GET, &path, user, None)
                .await?;
            self.check(user, &answer)?;
            let resp: wire::StatesResponse = self.parse("GET jobs/state/", &answer)?;
            entries.extend(resp.into_entries());
        }
        Ok(entries)
    }

    async fn accounted_jobs(
        &self,
        query: &super::AccountingQuery,
    ) -> Result<Vec<super::AccountedJob>, SlurmError> {
        let v = self.api_version().await?;
        let user = query.as_user.as_ref().unwrap_or(&self.cfg.service_user);
        let path = format!("/slurmdb/{v}/jobs/?{}", wire::accounting_query(query));
        let answer = self
            .send("accounted_jobs", Method::GET, &path, user, None)
            .await?;
        self.check(user, &answer)?;
        let resp: wire::AccountedJobsResponse = self.parse("GET slurmdb jobs/", &answer)?;
        Ok(resp
            .into_jobs()
            .into_iter()
            .filter(|j| !j.state.is_finished())
            .collect())
    }

    async fn partitions(&self) -> Result<Vec<super::PartitionInfo>, SlurmError> {
        let v = self.api_version().await?;
        let user = &self.cfg.service_user;
        let answer = self
            .send(
                "partitions",
                Method::GET,
                &self.path(v, "partitions"),
                user,
                None,
            )
            .await?;
        self.check(user, &answer)?;
        let partitions: wire::PartitionsResponse = self.parse("GET partitions", &answer)?;
        let answer = self
            .send("nodes", Method::GET, &self.path(v, "nodes"), user, None)
            .await?;
        self.check(user, &answer)?;
        let nodes: wire::NodesResponse = self.parse("GET nodes", &answer)?;
        Ok(wire::partition_summary(partitions, nodes))
    }

    async fn jobs(&self, changed_since: Option<i64>) -> Result<super::JobsPage, SlurmError> {
        let v = self.api_version().await?;
        let user = &self.cfg.service_user;
        let rest = match changed_since {
            Some(t) => format!("jobs/?update_time={t}"),
            None => "jobs/".to_owned(),
        };
        // Full listings (adoption, orphan sweeps) are told apart from the poller's
        // incremental ones in the metrics.
        let operation = if changed_since.is_some() {
            "jobs"
        } else {
            "jobs_all"
        };
        let answer = self
            .send(operation, Method::GET, &self.path(v, &rest), user, None)
            .await?;
        self.check(user, &answer)?;
        let resp: wire::JobsResponse = self.parse("GET jobs/", &answer)?;
        Ok(super::JobsPage {
            jobs: resp.jobs.into_iter().map(wire::Job::into_info).collect(),
            last_update: resp
                .last_update
                .and_then(wire::NoVal::value)
                .filter(|t| *t > 0),
        })
    }

    async fn update_comment(
        &self,
        user: &str,
        job_id: u64,
        comment: &str,
    ) -> Result<(), SlurmError> {
        let v = self.api_version().await?;
        let body = wire::comment_update_body(comment);
        let answer = self
            .send(
                "update",
                Method::POST,
                &self.path(v, &format!("job/{job_id}")),
                user,
                Some(&body),
            )
            .await?;
        if names_unknown_job(&answer) {
            return Err(SlurmError::UnknownJob { job_id });
        }
        self.check(user, &answer)?;
        let env: wire::Envelope = self.parse(&format!("POST job/{job_id}"), &answer)?;
        if env.errors.is_empty() {
            Ok(())
        } else {
            Err(SlurmError::Rejected {
                status: answer.status.as_u16(),
                problems: env.errors,
            })
        }
    }

    async fn cancel(&self, user: &str, job_id: u64) -> Result<super::CancelOutcome, SlurmError> {
        let v = self.api_version().await?;
        let path = self.path(v, &format!("job/{job_id}"));
        let answer = self
            .send("cancel", Method::DELETE, &path, user, None)
            .await?;
        // DELETE of an unknown job: 500 + 2017 on 23.11, 200 with status[].error 2017
        // from 24.11 on (and no error at all on some versions).
        let resp: Option<wire::CancelResponse> = serde_json::from_slice(&answer.body).ok();
        let codes: Vec<i64> = resp
            .iter()
            .flat_map(|r| {
                r.status
                    .iter()
                    .filter_map(|s| s.error.as_ref().map(|e| e.code))
                    .chain(r.envelope.errors.iter().map(|p| p.error_number))
            })
            .collect();
        if codes.contains(&errno::INVALID_JOB_ID) {
            return Ok(super::CancelOutcome::Unknown);
        }
        if codes.contains(&errno::ALREADY_DONE) {
            return Ok(super::CancelOutcome::AlreadyFinished);
        }
        self.check(user, &answer)?;
        match resp {
            Some(r) if !r.envelope.errors.is_empty() => Err(SlurmError::Rejected {
                status: answer.status.as_u16(),
                problems: r.envelope.errors,
            }),
            _ => Ok(super::CancelOutcome::Signalled),
        }
    }
}

impl std::fmt::Debug for RestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestClient")
            .field("cluster", &self.cfg.cluster)
            .field("url", &self.cfg.url)
            .finish()
    }
}

/// Shared handle.
pub type SharedClient = Arc<RestClient>;
