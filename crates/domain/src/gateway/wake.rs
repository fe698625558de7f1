//! What a request to a preview may do: wake a paused sandbox, keep a running one awake, or neither.
//!
//! The rule is the browser's own account of why it sent the request (fetch metadata, which every current
//! browser sends and a page's script cannot forge):
//!
//! - A **navigation** (`Sec-Fetch-Mode: navigate`: a typed URL, a link, a reload) is a person looking. It
//!   wakes a paused sandbox and counts as activity. A client that sends no fetch metadata at all (curl, a
//!   health check someone set up on purpose) is treated the same way.
//! - A **subresource** a page loads (`Sec-Fetch-Dest` of `script`, `style`, `image`, …) counts as activity
//!   but does not wake: it comes from a page that is already open.
//! - **Background** traffic (`fetch`/XHR and WebSocket handshakes: `Sec-Fetch-Dest: empty`) neither wakes
//!   nor keeps awake. That is what a tab left open sends: Vite's client pings its server in a loop once
//!   its socket drops, and polling scripts poll. A forgotten tab must not keep a sandbox billing.
//!
//! Messages a browser sends on a proxied WebSocket count as activity (the gateway counts them); a socket
//! merely held open does not.

use crate::{JobStatus, SandboxState};

/// Why the browser sent a request, as far as waking and activity go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// A person navigated (or a client without fetch metadata asked): may wake, counts as activity.
    Navigation,
    /// A page loads one of its parts: counts as activity, does not wake.
    Subresource,
    /// Script-initiated traffic: neither wakes nor keeps awake.
    Background,
}

impl RequestKind {
    /// Classifies a request by its `Sec-Fetch-Mode` and `Sec-Fetch-Dest` headers and whether it asks for
    /// a WebSocket upgrade.
    pub fn classify(fetch_mode: Option<&str>, fetch_dest: Option<&str>, websocket: bool) -> Self {
        if websocket {
            return RequestKind::Background;
        }
        match (fetch_mode, fetch_dest) {
            (Some(mode), _) if mode.eq_ignore_ascii_case("navigate") => RequestKind::Navigation,
            (None, None) => RequestKind::Navigation,
            (_, Some(dest)) if !dest.eq_ignore_ascii_case("empty") => RequestKind::Subresource,
            _ => RequestKind::Background,
        }
    }

    /// Whether the request may wake a paused sandbox.
    pub fn may_wake(self) -> bool {
        self == RequestKind::Navigation
    }

    /// Whether the request keeps a running sandbox awake.
    pub fn is_activity(self) -> bool {
        self != RequestKind::Background
    }
}

/// What the gateway does with a request, given the job's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The sandbox is running: proxy.
    Proxy,
    /// Paused (or pausing) and the request may wake it: resume it, then proxy.
    Wake,
    /// A wake is in flight: wait for it (within a bound), then proxy.
    WaitForWake,
    /// Paused and the request may not wake it: 503 with `Retry-After`.
    Asleep,
    /// The sandbox is gone for good: the expired page (410).
    Gone,
    /// No preview here (not READY, no sandbox): 404.
    NotFound,
}

/// The decision for a request of `kind` to a job in `status` whose sandbox is in `state`.
pub fn decide(kind: RequestKind, status: JobStatus, state: SandboxState) -> Decision {
    if status != JobStatus::Ready {
        return Decision::NotFound;
    }
    match state {
        SandboxState::Running => Decision::Proxy,
        SandboxState::Resuming => Decision::WaitForWake,
        // Resume waits for a pause in flight and then resumes; a failed pause may have left it either way.
        SandboxState::Paused | SandboxState::Pausing | SandboxState::PauseFailed => {
            if kind.may_wake() {
                Decision::Wake
            } else {
                Decision::Asleep
            }
        }
        SandboxState::Expired | SandboxState::Killed => Decision::Gone,
        SandboxState::None => Decision::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn navigations_and_clients_without_fetch_metadata_wake() {
        for (mode, dest) in [
            (Some("navigate"), Some("document")),
            (Some("navigate"), Some("iframe")),
            (Some("NAVIGATE"), None),
            (None, None),
        ] {
            let kind = RequestKind::classify(mode, dest, false);
            assert_eq!(kind, RequestKind::Navigation, "{mode:?} {dest:?}");
            assert!(kind.may_wake() && kind.is_activity());
        }
    }

    #[test]
    fn background_traffic_neither_wakes_nor_keeps_awake() {
        // fetch()/XHR polling, Vite's ping loop (`no-cors`, dest empty), and WebSocket handshakes.
        for (mode, dest, ws) in [
            (Some("cors"), Some("empty"), false),
            (Some("no-cors"), Some("empty"), false),
            (Some("same-origin"), Some("empty"), false),
            (Some("websocket"), Some("empty"), true),
            (None, None, true),
        ] {
            let kind = RequestKind::classify(mode, dest, ws);
            assert_eq!(kind, RequestKind::Background, "{mode:?} {dest:?} {ws}");
            assert!(!kind.may_wake() && !kind.is_activity());
        }
    }

    #[test]
    fn subresources_keep_awake_but_do_not_wake() {
        for dest in ["script", "style", "image", "font"] {
            let kind = RequestKind::classify(Some("no-cors"), Some(dest), false);
            assert_eq!(kind, RequestKind::Subresource);
            assert!(!kind.may_wake() && kind.is_activity());
        }
    }

    #[test]
    fn each_state_decides_once() {
        use Decision::*;
        let nav = RequestKind::Navigation;
        let bg = RequestKind::Background;
        let ready = JobStatus::Ready;
        assert_eq!(decide(nav, ready, SandboxState::Running), Proxy);
        assert_eq!(decide(bg, ready, SandboxState::Running), Proxy);
        assert_eq!(decide(nav, ready, SandboxState::Paused), Wake);
        assert_eq!(decide(nav, ready, SandboxState::Pausing), Wake);
        assert_eq!(decide(bg, ready, SandboxState::Paused), Asleep);
        assert_eq!(decide(bg, ready, SandboxState::Resuming), WaitForWake);
        assert_eq!(decide(nav, ready, SandboxState::Expired), Gone);
        assert_eq!(decide(bg, ready, SandboxState::Killed), Gone);
        assert_eq!(decide(nav, ready, SandboxState::None), NotFound);
        assert_eq!(
            decide(nav, JobStatus::Failed, SandboxState::Running),
            NotFound
        );
    }
}
