//! HTTP: the MCP endpoint (Streamable HTTP at `/mcp`, bearer tokens verified by
//! TokenReview) and, on a separate port, `/healthz`, `/readyz` and `/metrics`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use super::identity::{AuthError, Authenticator, bearer_token};
use super::state::GatewayState;
use super::tools::SlurmlabMcp;

/// Host/Origin checks of the MCP endpoint.
#[derive(Clone, Debug)]
pub struct HttpPolicy {
    /// Accepted `Host` values; empty: any (bearer authentication protects the endpoint).
    pub allowed_hosts: Vec<String>,
    /// Accepted browser `Origin`s; empty: requests with an Origin are not checked.
    pub allowed_origins: Vec<String>,
    /// Largest request body (an upload_file call carries the file, base64).
    pub max_body_bytes: usize,
}

/// The MCP router: `/mcp`, authenticated.
pub fn mcp_router(
    state: Arc<GatewayState>,
    auth: Arc<Authenticator>,
    policy: &HttpPolicy,
    shutdown: CancellationToken,
) -> Router {
    let mut config = StreamableHttpServerConfig::default()
        .with_cancellation_token(shutdown)
        .with_allowed_origins(policy.allowed_origins.clone())
        .with_max_request_body_bytes(policy.max_body_bytes);
    config = if policy.allowed_hosts.is_empty() {
        config.disable_allowed_hosts()
    } else {
        config.with_allowed_hosts(policy.allowed_hosts.clone())
    };
    let service = StreamableHttpService::new(
        move || Ok(SlurmlabMcp::new(state.clone())),
        LocalSessionManager::default().into(),
        config,
    );
    Router::new()
        .nest_service("/mcp", service)
        .layer(middleware::from_fn(session_end_ok))
        .layer(middleware::from_fn(parse_errors_are_400))
        .layer(middleware::from_fn_with_state(auth, authenticate))
}

/// rmcp answers a session's `DELETE /mcp` with 202; the official SDKs expect 200 or 204
/// and log "Session termination failed: 202" on every disconnect otherwise.
async fn session_end_ok(req: Request, next: Next) -> Response {
    let delete = req.method() == axum::http::Method::DELETE;
    let mut response = next.run(req).await;
    if delete && response.status() == StatusCode::ACCEPTED {
        *response.status_mut() = StatusCode::NO_CONTENT;
    }
    response
}

/// Whether a Content-Type header value is JSON (parameters such as charset aside).
fn is_json(content_type: Option<&str>) -> bool {
    content_type
        .map(|v| v.split(';').next().unwrap_or_default().trim())
        .is_some_and(|essence| essence.eq_ignore_ascii_case("application/json"))
}

/// rmcp answers a JSON body it cannot read as a JSON-RPC message with 415, which clients
/// read as "wrong Content-Type"; JSON-RPC says parse error (-32700), and HTTP says 400.
/// A request that really is not JSON keeps its 415.
async fn parse_errors_are_400(req: Request, next: Next) -> Response {
    let json = is_json(
        req.headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    );
    let response = next.run(req).await;
    if !json || response.status() != StatusCode::UNSUPPORTED_MEDIA_TYPE {
        return response;
    }
    // Small, plain text from rmcp (the parser's message); bounded all the same.
    let detail = match axum::body::to_bytes(response.into_body(), 64 * 1024).await {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(_) => String::new(),
    };
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {"code": -32700, "message": format!("Parse error: the body is not a JSON-RPC message ({detail})")},
    });
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Refuses requests without a valid bearer token (401 with `WWW-Authenticate`) and puts
/// the caller into the request for the tools.
async fn authenticate(
    State(auth): State<Arc<Authenticator>>,
    mut req: Request,
    next: Next,
) -> Response {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Some(token) = bearer_token(header) else {
        return unauthorized(
            "missing bearer token: send `Authorization: Bearer <Kubernetes token>`",
        );
    };
    // The peer address (absent only where no connect info is attached, e.g. in tests).
    let client = req
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    match auth.review(token, client).await {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(AuthError::Rejected(why)) => unauthorized(&format!("invalid token{why}")),
        Err(e @ AuthError::TooManyFailures(wait)) => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, wait.to_string())],
            e.to_string(),
        )
            .into_response(),
        Err(e @ AuthError::Unavailable(_)) => {
            tracing::warn!(error = %e, "token review failed");
            (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response()
        }
    }
}

fn unauthorized(message: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            format!("Bearer realm=\"slurmlab\", error=\"invalid_token\", error_description=\"{message}\""),
        )],
        message.to_owned(),
    )
        .into_response()
}

/// `/healthz`, `/readyz`, `/metrics`.
pub fn health_router(state: Arc<GatewayState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(state)
}

/// Ready while the API server answers (nothing works without it) and the gateway is not
/// draining for a shutdown (new runs go to another replica then).
async fn readyz(State(s): State<Arc<GatewayState>>) -> impl IntoResponse {
    if s.executions.draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining".to_owned());
    }
    let client = s.access.own();
    match tokio::time::timeout(
        std::time::Duration::from_secs(3),
        client.apiserver_version(),
    )
    .await
    {
        Ok(Ok(_)) => (StatusCode::OK, "ok".to_owned()),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the Kubernetes API server does not answer: {e}"),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the Kubernetes API server did not answer within 3 s".to_owned(),
        ),
    }
}

async fn metrics_text(State(s): State<Arc<GatewayState>>) -> impl IntoResponse {
    s.metrics.active_sessions.set(s.live.count() as i64);
    crate::process::metrics_response(&s.metrics.registry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types_are_recognised() {
        assert!(is_json(Some("application/json")));
        assert!(is_json(Some("Application/JSON; charset=utf-8")));
        assert!(!is_json(Some("text/plain")));
        assert!(!is_json(None));
    }
}
