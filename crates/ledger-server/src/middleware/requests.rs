//! Around every gRPC request: the per-connection request limit, the caller's deadline, and
//! the request metrics ([`RequestLayer`]).
//!
//! - **Requests per connection.** A connection may have at most `max_concurrent_streams`
//!   requests open; one more is answered `RESOURCE_EXHAUSTED` at once. HTTP/2 advertises twice
//!   that many streams, so a client past the limit is told instead of being queued silently by
//!   its HTTP/2 stack.
//! - **Deadlines.** A request with `grpc-timeout` that has not answered by then is answered
//!   `DEADLINE_EXCEEDED` (its handler is dropped, which stops its work); a stream still open at
//!   its deadline (Watch, SnapshotStream, AppendStream) ends with `DEADLINE_EXCEEDED`.
//! - **Metrics.** Each request is counted by method and final status code when it ends (a
//!   client that goes away counts as `CANCELLED`); unary requests also feed the latency
//!   histogram.

use crate::conn::ConnInfo;
use crate::error_status::{deadline_exceeded, too_many_requests};
use crate::metrics::Metrics;
use crate::metrics::labels::method_name;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use tonic::codegen::http;
use tonic::{Code, Status};

/// Streaming methods (no latency histogram: their duration is the stream's life).
fn is_streaming(method: &str) -> bool {
    matches!(
        method,
        "Watch"
            | "AppendStream"
            | "SnapshotStream"
            | "LoadStream"
            | "Replicate"
            | "ServerReflectionInfo"
    )
}

/// The `grpc-timeout` header as a duration (gRPC's `<digits><unit>` form).
pub fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    parse_grpc_timeout(headers.get("grpc-timeout")?.to_str().ok()?)
}

/// A `grpc-timeout` value (`<digits><unit>`) as a duration.
pub fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

fn status_of(headers: &http::HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .map(|v| Code::from_bytes(v.as_bytes()))
}

/// Applies the limit, deadline and metrics to every request.
#[derive(Clone, Debug)]
pub struct RequestLayer {
    metrics: Arc<Metrics>,
    max_per_connection: u32,
}

impl RequestLayer {
    pub fn new(metrics: Arc<Metrics>, max_per_connection: u32) -> Self {
        RequestLayer {
            metrics,
            max_per_connection,
        }
    }
}

impl<S> tower::Layer<S> for RequestLayer {
    type Service = RequestService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestService {
            inner,
            metrics: Arc::clone(&self.metrics),
            max_per_connection: self.max_per_connection,
        }
    }
}

/// See [`RequestLayer`].
#[derive(Clone, Debug)]
pub struct RequestService<S> {
    inner: S,
    metrics: Arc<Metrics>,
    max_per_connection: u32,
}

/// Holds one of a connection's request slots until the response body is dropped.
#[derive(Debug)]
struct Slot(Option<Arc<AtomicU32>>);

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(c) = &self.0 {
            c.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// What to record when the request ends.
#[derive(Debug)]
struct Finish {
    metrics: Arc<Metrics>,
    method: &'static str,
    started: Instant,
}

impl Finish {
    fn record(self, code: Code) {
        let unary = (!is_streaming(self.method)).then(|| self.started.elapsed());
        self.metrics.request(self.method, code, unary);
    }
}

impl<S, B> tower::Service<http::Request<B>> for RequestService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = method_name(req.uri().path());
        let finish = Finish {
            metrics: Arc::clone(&self.metrics),
            method,
            started: Instant::now(),
        };
        // Our deadline falls a millisecond before tonic's own timer for the same header, so the
        // caller gets DEADLINE_EXCEEDED rather than tonic's CANCELLED.
        let deadline = grpc_timeout(req.headers())
            .map(|t| Instant::now() + t.saturating_sub(Duration::from_millis(1)));
        let counter = req
            .extensions()
            .get::<ConnInfo>()
            .map(|c| Arc::clone(&c.open_requests));
        if let Some(c) = &counter {
            let open = c.fetch_add(1, Ordering::AcqRel) + 1;
            if open > self.max_per_connection {
                c.fetch_sub(1, Ordering::AcqRel);
                self.metrics.refused("max_concurrent_streams");
                finish.record(Code::ResourceExhausted);
                let status = too_many_requests(self.max_per_connection);
                return Box::pin(futures::future::ready(Ok(status.into_http())));
            }
        }
        let slot = Slot(counter);
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = match deadline {
                None => fut.await?,
                Some(d) => match tokio::time::timeout_at(d, fut).await {
                    Ok(r) => r?,
                    Err(_) => {
                        finish.record(Code::DeadlineExceeded);
                        return Ok(deadline_exceeded().into_http());
                    }
                },
            };
            if let Some(code) = status_of(resp.headers()) {
                // Trailers-only: the request is over.
                finish.record(code);
                let (parts, body) = resp.into_parts();
                let body = Tracked {
                    inner: body,
                    _slot: slot,
                    deadline: None,
                    finish: None,
                };
                return Ok(http::Response::from_parts(
                    parts,
                    tonic::body::Body::new(body),
                ));
            }
            let (parts, body) = resp.into_parts();
            let body = Tracked {
                inner: body,
                _slot: slot,
                deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
                finish: Some(finish),
            };
            Ok(http::Response::from_parts(
                parts,
                tonic::body::Body::new(body),
            ))
        })
    }
}

/// A response body that ends at the deadline, records the final code, and holds the
/// connection slot.
struct Tracked {
    inner: tonic::body::Body,
    _slot: Slot,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    finish: Option<Finish>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(f) = self.finish.take() {
            // The client went away (or the connection closed) before the status.
            f.record(Code::Cancelled);
        }
    }
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if let Some(d) = this.deadline.as_mut()
            && d.as_mut().poll(cx).is_ready()
        {
            this.deadline = None;
            if let Some(f) = this.finish.take() {
                f.record(Code::DeadlineExceeded);
            }
            let mut trailers = http::HeaderMap::new();
            let _ = deadline_exceeded().add_header(&mut trailers);
            // Nothing more of the inner body is sent after these trailers.
            this.inner = tonic::body::Body::empty();
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(t) = frame.trailers_ref()
                    && let Some(f) = this.finish.take()
                {
                    f.record(status_of(t).unwrap_or(Code::Unknown));
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(f) = this.finish.take() {
                    f.record(Code::Internal);
                }
            }
            Poll::Ready(None) => {
                if let Some(f) = this.finish.take() {
                    f.record(Code::Ok);
                }
            }
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        let mut h = http::HeaderMap::new();
        for (v, d) in [
            ("5S", Duration::from_secs(5)),
            ("250m", Duration::from_millis(250)),
            ("1H", Duration::from_secs(3600)),
            ("7u", Duration::from_micros(7)),
        ] {
            h.insert("grpc-timeout", v.parse().unwrap());
            assert_eq!(grpc_timeout(&h), Some(d), "{v}");
        }
        for bad in ["", "S", "12x", "1234567890S"] {
            h.insert("grpc-timeout", bad.parse().unwrap());
            assert_eq!(grpc_timeout(&h), None, "{bad:?}");
        }
    }
}
