//! Preview host labels: `{label}.{PREVIEW_DOMAIN}` names one job's preview. The label is the job id and a
//! MAC of it under the deployment's secret, so the gateway maps a host to its job without a lookup and
//! nobody can name the preview of a job they were not given (job ids appear in URLs and logs; labels do
//! not follow from them).

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

use crate::JobId;

/// Bytes of the MAC kept in a label: 80 bits, far past guessing, and the label (52 hex characters) fits a
/// DNS label's 63.
const LABEL_MAC_BYTES: usize = 10;

/// The key of labels and signed tokens (`PREVIEW_SECRET`). Its `Debug` never prints it.
#[derive(Clone)]
pub struct PreviewSecret(Vec<u8>);

impl PreviewSecret {
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        Self(secret.into())
    }

    /// HMAC-SHA256 of `parts`, each length-prefixed so that no two part lists collide.
    pub(crate) fn mac(&self, parts: &[&[u8]]) -> Hmac<Sha256> {
        // HMAC takes a key of any length; the error is unreachable.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac
    }
}

impl fmt::Debug for PreviewSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PreviewSecret(<redacted>)")
    }
}

/// The label of `job`'s preview host: lowercase hex, 52 characters.
pub fn label_for(secret: &PreviewSecret, job: JobId) -> String {
    let id = job.as_uuid();
    let mac = secret
        .mac(&[b"label", id.as_bytes()])
        .finalize()
        .into_bytes();
    let mut label = hex::encode(id.as_bytes());
    label.push_str(&hex::encode(&mac[..LABEL_MAC_BYTES]));
    label
}

/// The job a label names, when its MAC is right (compared in constant time).
pub fn job_of_label(secret: &PreviewSecret, label: &str) -> Option<JobId> {
    if label.len() != 32 + 2 * LABEL_MAC_BYTES || !label.is_ascii() {
        return None;
    }
    let (id_hex, mac_hex) = label.split_at(32);
    let id = Uuid::from_slice(&hex::decode(id_hex).ok()?).ok()?;
    let claimed = hex::decode(mac_hex).ok()?;
    secret
        .mac(&[b"label", id.as_bytes()])
        .verify_truncated_left(&claimed)
        .ok()?;
    Some(JobId::from_uuid(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_names_its_job_and_only_under_its_secret() {
        let secret = PreviewSecret::new("s1");
        let job = JobId::new();
        let label = label_for(&secret, job);
        assert_eq!(label.len(), 52);
        assert!(label
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(job_of_label(&secret, &label), Some(job));
        assert_eq!(job_of_label(&PreviewSecret::new("s2"), &label), None);
    }

    #[test]
    fn a_label_cannot_be_made_from_a_job_id() {
        let secret = PreviewSecret::new("s1");
        let job = JobId::new();
        let mut forged = hex::encode(job.as_uuid().as_bytes());
        forged.push_str(&"0".repeat(20));
        assert_eq!(job_of_label(&secret, &forged), None);
        let mut tampered = label_for(&secret, job);
        tampered.replace_range(0..1, if tampered.starts_with('0') { "1" } else { "0" });
        assert_eq!(job_of_label(&secret, &tampered), None);
        for junk in ["", "www", &"z".repeat(52), "é".repeat(26).as_str()] {
            assert_eq!(job_of_label(&secret, junk), None, "{junk}");
        }
    }

    #[test]
    fn the_secret_never_prints() {
        assert!(!format!("{:?}", PreviewSecret::new("hunter2")).contains("hunter2"));
    }
}
