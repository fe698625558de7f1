//! `PREVIEW_ACCESS=signed`: the owner's `preview_url` carries a short-lived token for its job, which the
//! gateway exchanges for a longer-lived cookie on that preview host. Both are `{expiry}.{mac}`: the MAC
//! binds the purpose, the job and the expiry, so a token of one job opens no other and cannot be extended.

use chrono::{DateTime, Utc};
use hmac::Mac;

use super::label::PreviewSecret;
use crate::JobId;

/// MAC bytes kept: 128 bits.
const MAC_BYTES: usize = 16;

/// What a signed value is for; a token is not a cookie and the other way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The query parameter of the owner's preview URL.
    Token,
    /// The cookie the gateway sets on the preview host.
    Cookie,
}

impl Purpose {
    fn tag(self) -> &'static [u8] {
        match self {
            Purpose::Token => b"token",
            Purpose::Cookie => b"cookie",
        }
    }
}

/// A signed value for `job` valid until `expires`.
pub fn issue(
    secret: &PreviewSecret,
    purpose: Purpose,
    job: JobId,
    expires: DateTime<Utc>,
) -> String {
    let exp = expires.timestamp();
    let mac = mac(secret, purpose, job, exp).finalize().into_bytes();
    format!("{exp}.{}", hex::encode(&mac[..MAC_BYTES]))
}

/// Whether `value` is a signed value for `job` and `purpose` that has not expired at `now`.
pub fn verify(
    secret: &PreviewSecret,
    purpose: Purpose,
    job: JobId,
    value: &str,
    now: DateTime<Utc>,
) -> bool {
    let Some((exp, mac_hex)) = value.split_once('.') else {
        return false;
    };
    let (Ok(exp), Ok(claimed)) = (exp.parse::<i64>(), hex::decode(mac_hex)) else {
        return false;
    };
    if claimed.len() != MAC_BYTES || exp <= now.timestamp() {
        return false;
    }
    mac(secret, purpose, job, exp)
        .verify_truncated_left(&claimed)
        .is_ok()
}

fn mac(secret: &PreviewSecret, purpose: Purpose, job: JobId, exp: i64) -> hmac::Hmac<sha2::Sha256> {
    secret.mac(&[
        b"signed",
        purpose.tag(),
        job.as_uuid().as_bytes(),
        &exp.to_be_bytes(),
    ])
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    #[test]
    fn a_token_opens_its_job_until_it_expires_and_nothing_else() {
        let secret = PreviewSecret::new("k");
        let now = Utc::now();
        let job = JobId::new();
        let token = issue(&secret, Purpose::Token, job, now + Duration::minutes(5));
        assert!(verify(&secret, Purpose::Token, job, &token, now));
        assert!(!verify(
            &secret,
            Purpose::Token,
            job,
            &token,
            now + Duration::minutes(6)
        ));
        assert!(!verify(&secret, Purpose::Token, JobId::new(), &token, now));
        assert!(!verify(&secret, Purpose::Cookie, job, &token, now));
        assert!(!verify(
            &PreviewSecret::new("other"),
            Purpose::Token,
            job,
            &token,
            now
        ));
    }

    #[test]
    fn an_extended_or_malformed_value_is_refused() {
        let secret = PreviewSecret::new("k");
        let now = Utc::now();
        let job = JobId::new();
        let token = issue(&secret, Purpose::Cookie, job, now + Duration::minutes(5));
        let (_, mac) = token.split_once('.').unwrap();
        let extended = format!("{}.{mac}", (now + Duration::days(9)).timestamp());
        assert!(!verify(&secret, Purpose::Cookie, job, &extended, now));
        for junk in [
            "",
            ".",
            "1.2",
            "x.y",
            "99999999999.00",
            &format!("{token}00"),
        ] {
            assert!(!verify(&secret, Purpose::Cookie, job, junk, now), "{junk}");
        }
    }
}
