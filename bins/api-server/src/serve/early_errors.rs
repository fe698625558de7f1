//! hyper answers a request it cannot parse (400 malformed, 414 URI too long, 431 headers too large) by
//! itself, before any router runs, with an empty body. [`EarlyErrors`] sits between hyper and the socket and
//! writes those answers as the API writes every error: `{"detail": …, "debug_id": …}`.
//!
//! hyper's own answer is recognised by its shape: the whole message in one buffer, one of those statuses,
//! `content-length: 0` and nothing after the head. The API itself never answers so (its errors have a body).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use uuid::Uuid;

/// The longest message hyper's automatic answer can be (status line, date, content-length).
const MAX_AUTOMATIC: usize = 256;

/// A connection's I/O, rewriting hyper's automatic error answers.
pub struct EarlyErrors<T> {
    inner: T,
    /// The rewritten answer being written, how far, and how much of hyper's buffer it stands for.
    replacing: Option<Replacement>,
}

struct Replacement {
    bytes: Vec<u8>,
    written: usize,
    claimed: usize,
}

impl<T> EarlyErrors<T> {
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            replacing: None,
        }
    }
}

/// The JSON answer for hyper's automatic answer `message`, or `None` when `message` is anything else.
fn rewrite(message: &[u8]) -> Option<Vec<u8>> {
    if message.len() > MAX_AUTOMATIC || !message.ends_with(b"\r\n\r\n") {
        return None;
    }
    let text = std::str::from_utf8(message).ok()?;
    let (status, detail) = match text.get(..13)? {
        "HTTP/1.1 400 " | "HTTP/1.0 400 " => (400, "Malformed request"),
        "HTTP/1.1 414 " | "HTTP/1.0 414 " => (414, "Request URI is too long"),
        "HTTP/1.1 431 " | "HTTP/1.0 431 " => (431, "Request headers are too large"),
        _ => return None,
    };
    let empty_body = text
        .split("\r\n")
        .any(|line| line.eq_ignore_ascii_case("content-length: 0"));
    // Nothing after the head: the message is all of hyper's answer.
    if !empty_body || text.find("\r\n\r\n")? + 4 != text.len() {
        return None;
    }
    let debug_id = Uuid::new_v4();
    tracing::debug!(status, %debug_id, "request refused before routing");
    let body = serde_json::json!({ "detail": detail, "debug_id": debug_id }).to_string();
    let reason = match status {
        400 => "Bad Request",
        414 => "URI Too Long",
        _ => "Request Header Fields Too Large",
    };
    Some(
        format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

impl<T: AsyncWrite + Unpin> EarlyErrors<T> {
    /// Writes the replacement to its end; then hyper's buffer counts as written.
    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some(r) = self.replacing.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        while r.written < r.bytes.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &r.bytes[r.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            r.written += n;
        }
        let claimed = r.claimed;
        self.replacing = None;
        Poll::Ready(Ok(claimed))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for EarlyErrors<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for EarlyErrors<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.replacing.is_none() {
            match rewrite(buf) {
                Some(bytes) => {
                    this.replacing = Some(Replacement {
                        bytes,
                        written: 0,
                        claimed: buf.len(),
                    });
                }
                None => return Pin::new(&mut this.inner).poll_write(cx, buf),
            }
        }
        this.drive(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.replacing.is_none() {
            let total: usize = bufs.iter().map(|b| b.len()).sum();
            let starts_as_error = bufs
                .iter()
                .find(|b| !b.is_empty())
                .is_some_and(|b| b.starts_with(b"HTTP/1.1 4") || b.starts_with(b"HTTP/1.0 4"));
            let bytes = (starts_as_error && total <= MAX_AUTOMATIC)
                .then(|| {
                    bufs.iter()
                        .flat_map(|b| b.iter().copied())
                        .collect::<Vec<u8>>()
                })
                .and_then(|joined| rewrite(&joined));
            match bytes {
                Some(bytes) => {
                    this.replacing = Some(Replacement {
                        bytes,
                        written: 0,
                        claimed: total,
                    });
                }
                None => return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
            }
        }
        this.drive(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.drive(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.drive(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_automatic_answers_become_json() {
        for (status, message) in [
            (
                400,
                "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: Thu, 03 Dec 2026 15:00:00 GMT\r\n\r\n",
            ),
            (
                431,
                "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n",
            ),
            (414, "HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n\r\n"),
        ] {
            let out = String::from_utf8(rewrite(message.as_bytes()).unwrap()).unwrap();
            assert!(out.starts_with(&format!("HTTP/1.1 {status} ")), "{out}");
            let body: serde_json::Value =
                serde_json::from_str(out.split("\r\n\r\n").nth(1).unwrap()).unwrap();
            assert!(body["detail"].is_string() && body["debug_id"].is_string());
        }
    }

    #[test]
    fn the_apis_own_answers_pass_untouched() {
        for message in [
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 20\r\n\r\n{\"detail\":\"x\"}",
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 20\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
        ] {
            assert!(rewrite(message.as_bytes()).is_none(), "{message}");
        }
    }
}
