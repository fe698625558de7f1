//! A client's `X-Request-Id` is kept only when it is short and safe to log and echo: 1 to
//! [`MAX_REQUEST_ID`] ASCII letters, digits, `-`, `_` or `.`. Anything else is dropped, and the request id
//! layer generates one in its place.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

/// Longest client request id kept (a UUID is 36).
pub const MAX_REQUEST_ID: usize = 64;

const HEADER: &str = "x-request-id";

/// Whether `id` may be used as the request's id.
pub fn is_acceptable(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Middleware, before the request id is set: removes every `X-Request-Id` unless there is exactly one and
/// it is acceptable.
pub async fn keep_if_safe(mut req: Request, next: Next) -> Response {
    let headers = req.headers();
    let mut given = headers.get_all(HEADER).iter();
    let keep = match (given.next(), given.next()) {
        (None, _) => true,
        (Some(one), None) => is_acceptable(one.as_bytes()),
        (Some(_), Some(_)) => false,
    };
    if !keep {
        req.headers_mut().remove(HEADER);
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_safe_ids_are_kept() {
        assert!(is_acceptable(b"3f1c2a9e-0b7d-4c55-9a1e-2f4b6c8d0e1f"));
        assert!(is_acceptable(b"trace_01.abc"));
        assert!(!is_acceptable(b""));
        assert!(!is_acceptable(&[b'a'; MAX_REQUEST_ID + 1]));
        assert!(!is_acceptable(b"id with spaces"));
        assert!(!is_acceptable(b"id\"}{\"injected"));
        assert!(!is_acceptable("idé".as_bytes()));
    }
}
