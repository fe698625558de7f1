//! A request body that must arrive within a deadline of its headers. Past it the body fails, and the
//! request carries [`BodyExpired`], so that the JSON extractor answers 408 (not the route's 503 timeout).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Bytes;
use axum::BoxError;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

/// Set on a request whose body missed its deadline.
#[derive(Debug, Clone, Default)]
pub struct BodyExpired(Arc<AtomicBool>);

impl BodyExpired {
    pub fn is_expired(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("request body not received in time")]
pub struct BodyTimedOut;

/// `inner`, failing with [`BodyTimedOut`] once `deadline` passes while it is still arriving.
pub struct TimedBody {
    inner: Incoming,
    deadline: Instant,
    /// Started the first time the body is not ready (most bodies never wait).
    sleep: Option<Pin<Box<Sleep>>>,
    expired: BodyExpired,
}

impl TimedBody {
    pub fn new(inner: Incoming, deadline: Instant) -> (Self, BodyExpired) {
        let expired = BodyExpired::default();
        (
            Self {
                inner,
                deadline,
                sleep: None,
                expired: expired.clone(),
            },
            expired,
        )
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(BoxError::from)));
        }
        let deadline = this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.as_mut().poll(cx).is_ready() {
            this.expired.0.store(true, Ordering::Release);
            return Poll::Ready(Some(Err(BodyTimedOut.into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
