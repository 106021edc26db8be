//! The Jupyter Server REST API: status, kernelspecs, kernels, contents.

use std::time::Duration;

use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{JupyterError, check_path, error_chain};

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

/// A kernel as `/api/kernels` describes it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct KernelModel {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub execution_state: Option<String>,
    #[serde(default)]
    pub last_activity: Option<String>,
    #[serde(default)]
    pub connections: u32,
}

/// A file, notebook or directory from the contents API.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct ContentModel {
    pub name: String,
    pub path: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default)]
    pub content: Value,
    #[serde(default)]
    pub last_modified: Option<String>,
    #[serde(default)]
    pub size: Option<u64>,
}

impl JupyterServer {
    /// `base_url` like `http://node17:43121`; `timeout` bounds each REST call.
    pub fn new(
        base_url: impl Into<String>,
        token: impl Into<String>,
        timeout: Duration,
    ) -> Result<Self, JupyterError> {
        crate::tls::ensure_crypto_provider();
        let base_url = base_url.into().trim_end_matches('/').to_owned();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .pool_max_idle_per_host(4)
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

    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    /// One REST call; 404 becomes `NotFound { what }`.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        what: &str,
    ) -> Result<reqwest::Response, JupyterError> {
        self.call_with(method, path, body, what, None).await
    }

    /// [`Self::call`] with a `Range` header.
    async fn call_with(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        what: &str,
        range: Option<String>,
    ) -> Result<reqwest::Response, JupyterError> {
        let url = format!("{}{path}", self.base_url);
        let mut req = self
            .http
            .request(method, &url)
            .header("Authorization", format!("token {}", self.token));
        if let Some(body) = body {
            req = req.json(&body);
        }
        if let Some(range) = range {
            req = req.header(reqwest::header::RANGE, range);
        }
        let resp = req.send().await.map_err(|e| JupyterError::Unreachable {
            url: url.clone(),
            detail: error_chain(&e),
        })?;
        let status = resp.status().as_u16();
        match status {
            200..=299 => Ok(resp),
            401 | 403 => Err(JupyterError::Forbidden { url, status }),
            404 => Err(JupyterError::NotFound {
                what: what.to_owned(),
            }),
            _ => {
                let text = resp.text().await.unwrap_or_default();
                // Jupyter errors are JSON with a "message".
                let detail = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
                    .unwrap_or_else(|| text.chars().take(200).collect());
                Err(JupyterError::Http {
                    url,
                    status,
                    detail,
                })
            }
        }
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        resp: reqwest::Response,
    ) -> Result<T, JupyterError> {
        let url = resp.url().to_string();
        resp.json().await.map_err(|e| JupyterError::Malformed {
            url,
            detail: e.to_string(),
        })
    }

    /// `GET /api/status`.
    pub async fn status(&self) -> Result<ServerStatus, JupyterError> {
        let resp = self
            .call(Method::GET, "/api/status", None, "the status endpoint")
            .await?;
        self.json(resp).await
    }

    /// Kernel spec names and the default one.
    pub async fn kernelspecs(&self) -> Result<(String, Vec<String>), JupyterError> {
        let resp = self
            .call(Method::GET, "/api/kernelspecs", None, "kernelspecs")
            .await?;
        let v: Value = self.json(resp).await?;
        let default = v["default"].as_str().unwrap_or_default().to_owned();
        let names = v["kernelspecs"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        Ok((default, names))
    }

    /// Starts a kernel of the named spec. With `notebook` (a path under the root) the
    /// kernel runs in that notebook's directory, as in JupyterLab, so relative paths in
    /// code mean what the file tools mean; without it, in the server's own directory.
    pub async fn start_kernel(
        &self,
        name: &str,
        notebook: Option<&str>,
    ) -> Result<KernelModel, JupyterError> {
        let mut body = json!({"name": name});
        if let Some(path) = notebook {
            body["path"] = json!(path);
        }
        let resp = self
            .call(
                Method::POST,
                "/api/kernels",
                Some(body),
                &format!("kernel spec {name}"),
            )
            .await?;
        self.json(resp).await
    }

    /// A kernel, or `None` if the server does not know it.
    pub async fn kernel(&self, id: &str) -> Result<Option<KernelModel>, JupyterError> {
        match self
            .call(
                Method::GET,
                &format!("/api/kernels/{id}"),
                None,
                &format!("kernel {id}"),
            )
            .await
        {
            Ok(resp) => self.json(resp).await.map(Some),
            Err(JupyterError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn kernels(&self) -> Result<Vec<KernelModel>, JupyterError> {
        let resp = self
            .call(Method::GET, "/api/kernels", None, "kernels")
            .await?;
        self.json(resp).await
    }

    /// `GET /slurmlab/resources`: what the job has and uses, from the server slurmlab's job
    /// script configures (`controller::script::RESOURCES_EXTENSION`).
    pub async fn resources(&self) -> Result<Value, JupyterError> {
        let resp = self
            .call(Method::GET, RESOURCES_PATH, None, "/slurmlab/resources")
            .await?;
        self.json(resp).await
    }

    pub async fn interrupt(&self, id: &str) -> Result<(), JupyterError> {
        self.call(
            Method::POST,
            &format!("/api/kernels/{id}/interrupt"),
            None,
            &format!("kernel {id}"),
        )
        .await
        .map(|_| ())
    }

    pub async fn restart(&self, id: &str) -> Result<(), JupyterError> {
        self.call(
            Method::POST,
            &format!("/api/kernels/{id}/restart"),
            None,
            &format!("kernel {id}"),
        )
        .await
        .map(|_| ())
    }

    /// Shuts a kernel down; a kernel that is already gone is fine.
    pub async fn shutdown(&self, id: &str) -> Result<(), JupyterError> {
        match self
            .call(
                Method::DELETE,
                &format!("/api/kernels/{id}"),
                None,
                &format!("kernel {id}"),
            )
            .await
        {
            Ok(_) | Err(JupyterError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn contents_path(path: &str) -> String {
        let encoded: Vec<String> = path.split('/').map(urlencode).collect();
        format!("/api/contents/{}", encoded.join("/"))
    }

    /// At most `len` bytes of a file from byte `start`, read with an HTTP Range request on
    /// `/files/` so the server sends (and the gateway holds) only those bytes. Past the
    /// end: nothing.
    pub async fn read_range(
        &self,
        path: &str,
        start: u64,
        len: u64,
    ) -> Result<Vec<u8>, JupyterError> {
        let path = check_path(path)?;
        if len == 0 {
            return Ok(vec![]);
        }
        let encoded: Vec<String> = path.split('/').map(urlencode).collect();
        let end = start.saturating_add(len - 1);
        let resp = self
            .call_with(
                Method::GET,
                &format!("/files/{}", encoded.join("/")),
                None,
                path,
                Some(format!("bytes={start}-{end}")),
            )
            .await;
        let resp = match resp {
            // 416: the range starts past the end of the file.
            Err(JupyterError::Http { status: 416, .. }) => return Ok(vec![]),
            r => r?,
        };
        let partial = resp.status().as_u16() == 206;
        let body = resp.bytes().await.map_err(|e| JupyterError::Unreachable {
            url: format!("{}/files/{path}", self.base_url),
            detail: error_chain(&e),
        })?;
        if partial {
            return Ok(body.to_vec());
        }
        // A server without Range support sent the whole file: keep the asked-for part.
        let from = usize::try_from(start).unwrap_or(usize::MAX).min(body.len());
        let to = from
            .saturating_add(usize::try_from(len).unwrap_or(usize::MAX))
            .min(body.len());
        Ok(body[from..to].to_vec())
    }

    /// A file, notebook or directory (`content` false: metadata only).
    pub async fn get(&self, path: &str, content: bool) -> Result<ContentModel, JupyterError> {
        let path = check_path(path)?;
        let q = if content { "" } else { "?content=0" };
        let resp = self
            .call(
                Method::GET,
                &format!("{}{q}", Self::contents_path(path)),
                None,
                path,
            )
            .await?;
        self.json(resp).await
    }

    /// A directory's entries; `""` is the notebook root.
    pub async fn list(&self, dir: &str) -> Result<Vec<ContentModel>, JupyterError> {
        let dir = dir.trim_matches('/');
        let url = if dir.is_empty() {
            "/api/contents".to_owned()
        } else {
            Self::contents_path(check_path(dir)?)
        };
        let resp = self.call(Method::GET, &url, None, dir).await?;
        let model: ContentModel = self.json(resp).await?;
        if model.kind != "directory" {
            return Err(JupyterError::Http {
                url,
                status: 400,
                detail: format!("{dir:?} is a {}, not a directory", model.kind),
            });
        }
        serde_json::from_value(model.content).map_err(|e| JupyterError::Malformed {
            url: format!("{}{url}", self.base_url),
            detail: e.to_string(),
        })
    }

    /// Whether something exists at `path`.
    pub async fn exists(&self, path: &str) -> Result<bool, JupyterError> {
        match self.get(path, false).await {
            Ok(_) => Ok(true),
            Err(JupyterError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Writes a notebook (its JSON) at `path`, creating parent directories.
    pub async fn put_notebook(
        &self,
        path: &str,
        notebook: &Value,
    ) -> Result<ContentModel, JupyterError> {
        self.put(
            path,
            json!({"type": "notebook", "format": "json", "content": notebook}),
        )
        .await
    }

    /// Writes a text file into a directory that exists (one request; [`Self::put_file`]
    /// makes the directories first).
    pub async fn overwrite_file(&self, path: &str, content: &str) -> Result<(), JupyterError> {
        let path = check_path(path)?;
        let body = json!({"type": "file", "format": "text", "content": content});
        self.call(Method::PUT, &Self::contents_path(path), Some(body), path)
            .await?;
        Ok(())
    }

    /// Deletes a file (one already gone is fine).
    pub async fn delete(&self, path: &str) -> Result<(), JupyterError> {
        let path = check_path(path)?;
        match self
            .call(Method::DELETE, &Self::contents_path(path), None, path)
            .await
        {
            Ok(_) | Err(JupyterError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Writes a file: `format` is `text` or `base64`.
    pub async fn put_file(
        &self,
        path: &str,
        content: &str,
        format: &str,
    ) -> Result<ContentModel, JupyterError> {
        self.put(
            path,
            json!({"type": "file", "format": format, "content": content}),
        )
        .await
    }

    /// One chunk of a text file uploaded in pieces (the contents API's chunked save):
    /// chunk 1 creates or truncates the file, later ones append, -1 appends the last.
    pub async fn put_file_chunk(
        &self,
        path: &str,
        content: &str,
        chunk: i64,
    ) -> Result<(), JupyterError> {
        let body = json!({"type": "file", "format": "text", "content": content, "chunk": chunk});
        if chunk == 1 {
            self.put(path, body).await?;
        } else {
            let path = check_path(path)?;
            self.call(Method::PUT, &Self::contents_path(path), Some(body), path)
                .await?;
        }
        Ok(())
    }

    async fn put(&self, path: &str, body: Value) -> Result<ContentModel, JupyterError> {
        let path = check_path(path)?;
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.mkdir_all(parent).await?;
        }
        let resp = self
            .call(Method::PUT, &Self::contents_path(path), Some(body), path)
            .await?;
        self.json(resp).await
    }

    /// Creates a directory and its parents (existing ones are fine).
    pub async fn mkdir_all(&self, path: &str) -> Result<(), JupyterError> {
        let path = check_path(path)?;
        let mut current = String::new();
        for part in path.split('/') {
            if !current.is_empty() {
                current.push('/');
            }
            current.push_str(part);
            if !self.exists(&current).await? {
                self.call(
                    Method::PUT,
                    &Self::contents_path(&current),
                    Some(json!({"type": "directory"})),
                    &current,
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Copies `from` to the exact path `to` (read + write: the API's own copy picks names).
    pub async fn copy(&self, from: &str, to: &str) -> Result<ContentModel, JupyterError> {
        let model = self.get(from, true).await?;
        match model.kind.as_str() {
            "notebook" => self.put_notebook(to, &model.content).await,
            _ => {
                let format = model.format.clone().unwrap_or_else(|| "text".into());
                self.put_file(to, model.content.as_str().unwrap_or_default(), &format)
                    .await
            }
        }
    }
}

/// Where the job's server answers with its resources.
pub const RESOURCES_PATH: &str = "/slurmlab/resources";

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn paths_outside_the_root_are_refused_before_any_request() {
        // Port 9 (discard) is never contacted: the check comes first.
        let server = JupyterServer::new("http://127.0.0.1:9", "t", Duration::from_secs(1)).unwrap();
        for bad in [
            "../../etc/passwd",
            "/etc/passwd",
            "a/../../b.ipynb",
            "./x",
            "",
        ] {
            match server.get(bad, true).await {
                Err(JupyterError::PathOutsideRoot { path }) => assert_eq!(path, bad),
                other => panic!("{bad:?}: {other:?}"),
            }
            assert!(matches!(
                server.put_file(bad, "x", "text").await,
                Err(JupyterError::PathOutsideRoot { .. })
            ));
        }
        assert_eq!(
            JupyterServer::contents_path("my dir/nb 1.ipynb"),
            "/api/contents/my%20dir/nb%201.ipynb"
        );
    }
}
