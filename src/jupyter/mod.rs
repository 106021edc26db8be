//! Talking to a Jupyter server (REST; kernels and notebooks come with the session
//! controller).

use std::time::Duration;

use serde::Deserialize;

/// A Jupyter server reachable at `base_url` with a token.
#[derive(Clone)]
pub struct JupyterServer {
    base_url: String,
    token: String,
    http: reqwest::Client,
}

/// What `/api/status` answers.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct ServerStatus {
    #[serde(default)]
    pub started: Option<String>,
    #[serde(default)]
    pub last_activity: Option<String>,
    #[serde(default)]
    pub kernels: u32,
    #[serde(default)]
    pub connections: u32,
}

/// A failed call to a Jupyter server.
#[derive(Debug, thiserror::Error)]
pub enum JupyterError {
    #[error("cannot reach the Jupyter server at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error(
        "the Jupyter server at {url} refused the token (HTTP {status}); the server may belong to another allocation"
    )]
    Forbidden { url: String, status: u16 },
    #[error("the Jupyter server at {url} answered HTTP {status}: {detail}")]
    Http {
        url: String,
        status: u16,
        detail: String,
    },
    #[error("the Jupyter server at {url} answered something unreadable: {detail}")]
    Malformed { url: String, detail: String },
}

impl JupyterServer {
    /// `base_url` like `http://node17:43121`.
    pub fn new(
        base_url: impl Into<String>,
        token: impl Into<String>,
        timeout: Duration,
    ) -> Result<Self, JupyterError> {
        let base_url = base_url.into().trim_end_matches('/').to_owned();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| JupyterError::Unreachable {
                url: base_url.clone(),
                detail: e.to_string(),
            })?;
        Ok(Self {
            base_url,
            token: token.into(),
            http,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `GET /api/status` with the token.
    pub async fn status(&self) -> Result<ServerStatus, JupyterError> {
        let url = format!("{}/api/status", self.base_url);
        let resp = self
            .http
            .get(&url)
            .header("Authorization", format!("token {}", self.token))
            .send()
            .await
            .map_err(|e| JupyterError::Unreachable {
                url: url.clone(),
                detail: error_chain(&e),
            })?;
        let status = resp.status().as_u16();
        match status {
            200 => resp.json().await.map_err(|e| JupyterError::Malformed {
                url,
                detail: e.to_string(),
            }),
            401 | 403 => Err(JupyterError::Forbidden { url, status }),
            _ => {
                let detail = resp
                    .text()
                    .await
                    .unwrap_or_default()
                    .chars()
                    .take(200)
                    .collect();
                Err(JupyterError::Http {
                    url,
                    status,
                    detail,
                })
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s = format!("{s}: {inner}");
        source = inner.source();
    }
    s
}
