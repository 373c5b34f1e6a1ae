//! The body sent to an upstream: the client's body streamed through (optionally with a size
//! limit enforced as it streams), buffered (only when a plugin had to read it), or nothing.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// A request body forwarded upstream.
#[derive(Debug)]
pub enum UpstreamBody {
    /// The downstream client's body, streamed (never buffered whole).
    Client(Incoming),
    /// The client's body, read whole by a plugin that needed it (key-auth `key_in_body`);
    /// `None` once sent.
    Buffered(Option<Bytes>),
    /// The client's body, streamed, failing with [`BodyTooLarge`] once more than `limit`
    /// bytes went through (request-size-limiting on a body without a Content-Length).
    Limited {
        inner: Incoming,
        limit: u64,
        seen: u64,
    },
    /// No body.
    Empty,
}

/// A streamed request body grew past its size limit; the proxy answers 413.
#[derive(Debug, thiserror::Error)]
#[error("request body larger than {limit} bytes")]
pub struct BodyTooLarge {
    pub limit: u64,
}

impl UpstreamBody {
    /// Streams the client's body (if any is left to stream) with a size limit.
    pub fn limit(self, limit: u64) -> UpstreamBody {
        match self {
            UpstreamBody::Client(inner) => UpstreamBody::Limited {
                inner,
                limit,
                seen: 0,
            },
            other => other,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = crate::response::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            UpstreamBody::Client(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            UpstreamBody::Limited { inner, limit, seen } => match Pin::new(inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        *seen += data.len() as u64;
                        if *seen > *limit {
                            return Poll::Ready(Some(Err(Box::new(BodyTooLarge {
                                limit: *limit,
                            }))));
                        }
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                other => other.map_err(Into::into),
            },
            UpstreamBody::Buffered(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            UpstreamBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Client(b) => b.is_end_stream(),
            UpstreamBody::Limited { inner, .. } => inner.is_end_stream(),
            UpstreamBody::Buffered(b) => b.is_none(),
            UpstreamBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Client(b) => b.size_hint(),
            UpstreamBody::Limited { inner, .. } => inner.size_hint(),
            UpstreamBody::Buffered(b) => {
                SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64))
            }
            UpstreamBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// A response body from an upstream, read by either HTTP client.
#[derive(Debug)]
pub enum ResponseBody {
    /// From hyper's client.
    Hyper(Incoming),
    /// From the request task's own HTTP/1.1 client.
    H1(crate::h1::Body),
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = crate::response::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ResponseBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            ResponseBody::H1(b) => b.poll_next(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Hyper(b) => b.is_end_stream(),
            ResponseBody::H1(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Hyper(b) => b.size_hint(),
            ResponseBody::H1(b) => b.size_hint(),
        }
    }
}
