//! Request telemetry. Every request gets an `x-correlation-id` (the client's, or a new
//! UUID, echoed in the response), a `tracing` span named `request` with its method, route,
//! status, latency, actor and correlation id (tower-http's trace layer; the actor is
//! recorded once the API key is known), and a count and latency by method, route and
//! status in `/metrics`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, Response};
use axum::middleware::Next;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::classify::ServerErrorsFailureClass;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::metrics::Metrics;

pub const CORRELATION_HEADER: HeaderName = HeaderName::from_static("x-correlation-id");

/// The route a request matched, as a label: its template (`/v1/employees/{id}`), never the
/// path itself (whose ids would make one series per entity).
fn route(request: &Request) -> String {
    request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned())
}

fn request_span(request: &Request) -> Span {
    let correlation_id = request.headers().get(&CORRELATION_HEADER).and_then(|value| value.to_str().ok());
    tracing::info_span!(
        "request",
        method = %request.method(),
        route = %route(request),
        correlation_id = correlation_id.unwrap_or(""),
        actor = tracing::field::Empty,
        status = tracing::field::Empty,
        latency_ms = tracing::field::Empty,
    )
}

fn on_response<B>(response: &Response<B>, latency: Duration, span: &Span) {
    span.record("status", response.status().as_u16());
    span.record("latency_ms", latency.as_millis() as u64);
    tracing::info!("answered");
}

fn on_failure(failure: ServerErrorsFailureClass, latency: Duration, _: &Span) {
    tracing::error!(%failure, latency_ms = latency.as_millis() as u64, "failed");
}

/// A handler that panicked still answers problem+json (a 500, logged with the panic's
/// message); the connection is not dropped. No input a client can send should get here.
fn panicked(panic: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("a panic without a message");
    axum::response::IntoResponse::into_response(crate::error::AppError::internal(format!(
        "a handler panicked: {message}"
    )))
}

/// Records who acts in the current request's span.
pub fn record_actor(actor: &str) {
    Span::current().record("actor", actor);
}

/// Counts the request and its latency by method, route and status.
pub async fn measure(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> axum::response::Response {
    let (method, route) = (request.method().clone(), route(&request));
    let started = Instant::now();
    let response = next.run(request).await;
    metrics.observe_request(method.as_str(), &route, response.status().as_u16(), started.elapsed());
    response
}

/// The layers, outermost first: the correlation id is set before the span reads it.
pub fn layers<S: Clone + Send + Sync + 'static>(router: axum::Router<S>, metrics: Arc<Metrics>) -> axum::Router<S> {
    let trace = TraceLayer::new_for_http()
        .make_span_with(request_span)
        .on_request(())
        .on_response(on_response)
        .on_failure(on_failure);
    router
        .layer(axum::middleware::from_fn(super::extract::refuse_nul))
        .layer(CatchPanicLayer::custom(panicked))
        .layer(axum::middleware::from_fn_with_state(metrics, measure))
        .layer(trace)
        .layer(PropagateRequestIdLayer::new(CORRELATION_HEADER))
        .layer(SetRequestIdLayer::new(CORRELATION_HEADER, MakeRequestUuid))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::routing::get;
    use tower::ServiceExt as _;

    /// A handler that panics answers a problem+json 500 through the same layers as the API,
    /// with its correlation id, and the connection is not dropped.
    #[tokio::test]
    async fn a_panicking_handler_answers_a_problem_not_a_dropped_connection() {
        async fn panics() -> &'static str {
            panic!("deliberately, for the test")
        }
        let metrics = std::sync::Arc::new(crate::metrics::Metrics::new());
        let router = super::layers(axum::Router::new().route("/panics", get(panics)), metrics.clone());
        let response = router.oneshot(Request::get("/panics").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()["content-type"], "application/problem+json");
        assert!(response.headers().contains_key("x-correlation-id"));
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["code"], "internal");
        assert!(metrics.render(&[], None).contains(r#"route="/panics",status="500"} 1"#));
    }
}
