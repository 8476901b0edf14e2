//! [`NodeIdLayer`]: every response names the node that answered, in `x-ledger-node`.

use std::task::{Context, Poll};
use tonic::codegen::http;

/// Response metadata naming the node that answered.
pub const NODE_HEADER: &str = "x-ledger-node";

/// A tower layer that adds `x-ledger-node: <node id>` to every response (also to errors, whose
/// status travels in the same header block).
#[derive(Clone, Debug)]
pub struct NodeIdLayer(http::HeaderValue);

impl NodeIdLayer {
    pub fn new(node_id: &str) -> Result<Self, String> {
        http::HeaderValue::from_str(node_id)
            .map(NodeIdLayer)
            .map_err(|e| format!("node id {node_id:?} is not a valid header value: {e}"))
    }
}

impl<S> tower::Layer<S> for NodeIdLayer {
    type Service = NodeIdService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        NodeIdService {
            inner,
            value: self.0.clone(),
        }
    }
}

/// See [`NodeIdLayer`].
#[derive(Clone, Debug)]
pub struct NodeIdService<S> {
    inner: S,
    value: http::HeaderValue,
}

impl<S, B, R> tower::Service<http::Request<B>> for NodeIdService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<http::Response<R>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let fut = self.inner.call(req);
        let value = self.value.clone();
        Box::pin(async move {
            let mut resp = fut.await?;
            resp.headers_mut()
                .insert(http::HeaderName::from_static(NODE_HEADER), value);
            Ok(resp)
        })
    }
}
