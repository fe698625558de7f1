//! Waiting for a preview to answer: the readiness rule of the build and of resume.
//!
//! Only the dev server's own answers count. The provider's proxy answers for the sandbox when the app
//! cannot (E2B: 502 "port is not open" while nothing listens, 502 "sandbox not found" for a paused or
//! gone sandbox, 400 for a host it cannot route); those are never "up", whatever their status. And a dev
//! server that has exited will not answer: waiting for it ends at once with its exit.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use crate::ports::{
    BackgroundCommand, CommandExit, PreviewProbe, ProbeError, ProbeResponse, ProxyAnswer,
};

/// A preview is up when the dev server itself answered, with a status below 500.
pub fn is_up(resp: &ProbeResponse) -> bool {
    resp.proxy.is_none() && resp.status < 500
}

/// What a probe saw when the preview was not up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotUp {
    /// The provider's proxy answered in the app's place.
    Proxy(ProxyAnswer),
    /// The dev server answered with a server error.
    Status(u16),
    /// Nothing answered.
    Failed(ProbeError),
}

impl fmt::Display for NotUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotUp::Proxy(answer) => answer.fmt(f),
            NotUp::Status(status) => write!(f, "the app answered HTTP {status}"),
            NotUp::Failed(error) => error.fmt(f),
        }
    }
}

/// One probe: the answer when up, what was seen otherwise.
async fn probe_once(probe: &dyn PreviewProbe, url: &str) -> Result<ProbeResponse, NotUp> {
    match probe.get(url).await {
        Ok(resp) if is_up(&resp) => Ok(resp),
        Ok(ProbeResponse {
            proxy: Some(answer),
            ..
        }) => Err(NotUp::Proxy(answer)),
        Ok(resp) => Err(NotUp::Status(resp.status)),
        Err(error) => Err(NotUp::Failed(error)),
    }
}

/// Probes `url` every `interval` until it is up or `deadline` passes: the up answer, or the last thing
/// seen (`None` only when no probe ran).
async fn poll(
    probe: &dyn PreviewProbe,
    url: &str,
    deadline: Duration,
    interval: Duration,
) -> Result<ProbeResponse, Option<NotUp>> {
    let until = Instant::now() + deadline;
    loop {
        let seen = match probe_once(probe, url).await {
            Ok(resp) => return Ok(resp),
            Err(seen) => seen,
        };
        if Instant::now() + interval > until {
            return Err(Some(seen));
        }
        tokio::time::sleep(interval).await;
    }
}

/// Probes `url` every `interval` until it is up or `deadline` passes. Returns the up answer.
pub async fn wait_until_up(
    probe: &dyn PreviewProbe,
    url: &str,
    deadline: Duration,
    interval: Duration,
) -> Option<ProbeResponse> {
    poll(probe, url, deadline, interval).await.ok()
}

/// How waiting for a dev server ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// The dev server answered.
    Up(ProbeResponse),
    /// The dev server exited before it answered.
    Exited(CommandExit),
    /// The deadline passed with the dev server still running; what the last probe saw.
    NotUp(Option<NotUp>),
}

/// Waits for the dev server `server` to answer at `url`: up, or its exit as soon as the runtime reports
/// it, or what the last probe saw when `deadline` passes.
pub async fn wait_for_dev_server(
    probe: &dyn PreviewProbe,
    url: &str,
    server: &mut BackgroundCommand,
    deadline: Duration,
    interval: Duration,
) -> Readiness {
    tokio::select! {
        // An exit reported while a probe is in flight wins: that answer cannot be the dev server's.
        biased;
        exit = server.exited() => Readiness::Exited(exit),
        polled = poll(probe, url, deadline, interval) => match polled {
            Ok(resp) => Readiness::Up(resp),
            Err(seen) => Readiness::NotUp(seen),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::probe::MockPreviewProbe;

    fn answer(status: u16) -> ProbeResponse {
        ProbeResponse::from_app(status, "http://x")
    }

    fn proxy(status: u16, answer: ProxyAnswer) -> ProbeResponse {
        ProbeResponse {
            proxy: Some(answer),
            ..ProbeResponse::from_app(status, "http://x")
        }
    }

    #[test]
    fn only_the_dev_servers_own_answers_below_500_are_up() {
        assert!(is_up(&answer(200)));
        assert!(is_up(&answer(404)), "a dev server that answers 404 is up");
        assert!(!is_up(&answer(500)));
        assert!(!is_up(&answer(502)));
        for (status, seen) in [
            (502, ProxyAnswer::PortNotOpen),
            (502, ProxyAnswer::SandboxNotFound),
            (400, ProxyAnswer::BadRoute("Invalid host".into())),
            (400, ProxyAnswer::BadRoute("Invalid sandbox ID".into())),
            (429, ProxyAnswer::Other("too many connections".into())),
            (409, ProxyAnswer::Other("still transitioning".into())),
        ] {
            assert!(!is_up(&proxy(status, seen.clone())), "{status} {seen:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn waits_through_errors_5xx_and_proxy_answers_until_the_app_answers() {
        let mut probe = MockPreviewProbe::new();
        let mut seq = mockall::Sequence::new();
        probe
            .expect_get()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Err(ProbeError::Unreachable("refused".into())));
        probe
            .expect_get()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(proxy(400, ProxyAnswer::BadRoute("Invalid host".into()))));
        probe
            .expect_get()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(proxy(502, ProxyAnswer::PortNotOpen)));
        probe
            .expect_get()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(answer(502)));
        probe
            .expect_get()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(answer(404)));
        let got = wait_until_up(
            &probe,
            "http://x",
            Duration::from_secs(10),
            Duration::from_secs(1),
        )
        .await;
        assert_eq!(got.map(|r| r.status), Some(404));
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_at_the_deadline_with_what_it_last_saw() {
        let mut probe = MockPreviewProbe::new();
        probe
            .expect_get()
            .returning(|_| Ok(proxy(502, ProxyAnswer::PortNotOpen)));
        let mut server = BackgroundCommand::unwatched(7);
        let got = wait_for_dev_server(
            &probe,
            "http://x",
            &mut server,
            Duration::from_secs(5),
            Duration::from_secs(1),
        )
        .await;
        assert_eq!(
            got,
            Readiness::NotUp(Some(NotUp::Proxy(ProxyAnswer::PortNotOpen)))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_dev_server_that_exits_ends_the_wait_at_once() {
        let mut probe = MockPreviewProbe::new();
        probe
            .expect_get()
            .returning(|_| Ok(proxy(502, ProxyAnswer::PortNotOpen)));
        let (mut server, reporter) = BackgroundCommand::watched(7);
        let exit = CommandExit {
            exit_code: 1,
            output_tail: "Error: Cannot find module 'express'".into(),
        };
        let reported = exit.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            reporter.exited(reported);
        });
        let started = Instant::now();
        let got = wait_for_dev_server(
            &probe,
            "http://x",
            &mut server,
            Duration::from_secs(120),
            Duration::from_secs(1),
        )
        .await;
        assert_eq!(got, Readiness::Exited(exit.clone()));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "not the deadline"
        );
        // The exit stays known.
        assert_eq!(server.exited().await, exit);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reporter_dropped_unused_leaves_the_probe_to_decide() {
        let mut probe = MockPreviewProbe::new();
        probe.expect_get().returning(|_| Ok(answer(200)));
        let (mut server, reporter) = BackgroundCommand::watched(7);
        drop(reporter);
        let got = wait_for_dev_server(
            &probe,
            "http://x",
            &mut server,
            Duration::from_secs(5),
            Duration::from_secs(1),
        )
        .await;
        assert_eq!(got, Readiness::Up(answer(200)));
    }
}
