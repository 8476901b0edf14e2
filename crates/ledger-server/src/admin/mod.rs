//! The admin HTTP server on `admin_addr`: `/metrics` (Prometheus text) and the observer, a
//! read-only page at `/` with its JSON and server-sent-events API under `/api/`
//! ([`observer`]).
//!
//! It runs as one task owned by [`crate::serve::serve`]: it stops taking requests when the
//! node starts shutting down, and its live tails end with the ledger's watchers.

pub mod observer;

use crate::metrics::Metrics;
use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The page and its script and style, embedded in the binary (no build step, no network).
const INDEX_HTML: &str = include_str!("observer.html");
const OBSERVER_JS: &str = include_str!("observer.js");
const OBSERVER_CSS: &str = include_str!("observer.css");

/// Binds `admin_addr` (port 0 picks a free port).
pub async fn bind(addr: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} (setting admin_addr): {e}"))
}

/// Serves `/metrics` and the observer on `listener` until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    observer: observer::Observer,
    mut stop: watch::Receiver<bool>,
) {
    let app = Router::new()
        .route(
            "/",
            get(|| async { static_file("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/observer.js",
            get(|| async { static_file("text/javascript; charset=utf-8", OBSERVER_JS) }),
        )
        .route(
            "/observer.css",
            get(|| async { static_file("text/css; charset=utf-8", OBSERVER_CSS) }),
        )
        .route(
            "/metrics",
            get(move || {
                let m = Arc::clone(&metrics);
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        m.encode(),
                    )
                }
            }),
        )
        .merge(observer::routes(observer));
    let shutdown = async move {
        while !*stop.borrow_and_update() {
            if stop.changed().await.is_err() {
                break;
            }
        }
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "the admin HTTP server failed");
    }
}

fn static_file(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            // The page loads nothing from elsewhere.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'",
            ),
        ],
        body,
    )
}
