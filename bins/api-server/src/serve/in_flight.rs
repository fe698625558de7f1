//! A response body that keeps its request counted in flight until the body is finished or dropped, so an
//! event stream (a response that lasts as long as the build) is never taken for an idle connection.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use http_body::{Frame, SizeHint};

use super::registry::InFlight;

/// `inner`, holding `guard` while it lasts.
pub struct CountedBody {
    inner: Body,
    _guard: InFlight,
}

impl CountedBody {
    pub fn new(inner: Body, guard: InFlight) -> Self {
        Self {
            inner,
            _guard: guard,
        }
    }
}

impl http_body::Body for CountedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
