//! A fault-injecting HTTP proxy in front of slurmrestd, on 127.0.0.1: it forwards every
//! request, and for the requests a [`Fault`] names it lets the real server act and then
//! loses the answer (502/504, or the connection closed without one). What a flaky load
//! balancer or a restarting slurmrestd does to a client, made deterministic.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};

/// What happens to the answer of a matching request (after the upstream served it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward untouched.
    None,
    /// Forward, then answer 502 Bad Gateway instead of the real answer.
    BadGateway,
    /// Forward, then answer 504 Gateway Timeout instead of the real answer.
    GatewayTimeout,
}

struct Inner {
    upstream: String,
    http: reqwest::Client,
    fault: std::sync::Mutex<Fault>,
    /// Submits that reached the upstream.
    submits: AtomicUsize,
}

/// A running proxy; it stops when dropped.
pub struct FaultProxy {
    pub url: String,
    inner: Arc<Inner>,
    shutdown: tokio_util::sync::CancellationToken,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (e.g. `http://127.0.0.1:6820`) that applies `fault`
    /// to `POST .../job/submit`.
    pub async fn start(upstream: &str, fault: Fault) -> Self {
        let inner = Arc::new(Inner {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            fault: std::sync::Mutex::new(fault),
            submits: AtomicUsize::new(0),
        });
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fault proxy");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        let shutdown = tokio_util::sync::CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
        Self {
            url,
            inner,
            shutdown,
        }
    }

    pub fn set_fault(&self, fault: Fault) {
        *self.inner.fault.lock().expect("fault lock") = fault;
    }

    /// How many submits reached slurmrestd through this proxy.
    pub fn submits_forwarded(&self) -> usize {
        self.inner.submits.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn forward(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let is_submit = req.method() == Method::POST && req.uri().path().ends_with("/job/submit");
    let url = format!(
        "{}{}",
        inner.upstream,
        req.uri().path_and_query().map_or("/", |p| p.as_str())
    );
    let method = req.method().clone();
    let headers = req.headers().clone();
    let body = match axum::body::to_bytes(req.into_body(), 64 << 20).await {
        Ok(b) => b,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let mut out = inner.http.request(method, &url).body(body);
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            out = out.header(name, value);
        }
    }
    let answer = match out.send().await {
        Ok(a) => a,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = answer.status();
    let content_type = answer.headers().get("content-type").cloned();
    let bytes = answer.bytes().await.unwrap_or_default();
    if is_submit {
        inner.submits.fetch_add(1, Ordering::SeqCst);
        let fault = *inner.fault.lock().expect("fault lock");
        match fault {
            Fault::None => {}
            Fault::BadGateway => return (StatusCode::BAD_GATEWAY, "injected").into_response(),
            Fault::GatewayTimeout => {
                return (StatusCode::GATEWAY_TIMEOUT, "injected").into_response();
            }
        }
    }
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    if let Some(ct) = content_type {
        response.headers_mut().insert("content-type", ct);
    }
    response
}
