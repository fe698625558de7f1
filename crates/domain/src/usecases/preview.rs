//! Waiting for a preview to answer: the readiness rule of the build and of resume.

use std::time::Duration;

use tokio::time::Instant;

use crate::ports::{PreviewProbe, ProbeResponse};

/// A preview is up when it answers with a status below 500.
pub fn is_up(resp: &ProbeResponse) -> bool {
    resp.status < 500
}

/// Probes `url` every `interval` until it is up or `deadline` passes. Returns the last answer when up.
pub async fn wait_until_up(
    probe: &dyn PreviewProbe,
    url: &str,
    deadline: Duration,
    interval: Duration,
) -> Option<ProbeResponse> {
    let until = Instant::now() + deadline;
    loop {
        if let Ok(resp) = probe.get(url).await {
            if is_up(&resp) {
                return Some(resp);
            }
        }
        if Instant::now() + interval > until {
            return None;
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::probe::MockPreviewProbe;
    use crate::ports::ProbeError;

    fn answer(status: u16) -> ProbeResponse {
        ProbeResponse {
            status,
            final_url: "http://x".into(),
            x_frame_options: None,
            content_security_policy: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn waits_through_errors_and_5xx_until_a_good_answer() {
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
    async fn gives_up_at_the_deadline() {
        let mut probe = MockPreviewProbe::new();
        probe.expect_get().returning(|_| Ok(answer(503)));
        let got = wait_until_up(
            &probe,
            "http://x",
            Duration::from_secs(5),
            Duration::from_secs(1),
        )
        .await;
        assert!(got.is_none());
    }
}
