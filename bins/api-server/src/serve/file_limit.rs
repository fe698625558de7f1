//! The process's open-file limit, raised at start to its hard limit where the system allows, and the
//! connection cap that fits under it.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Files kept for everything but client connections: the Postgres pool, Redis, the runtime's clients,
/// logs, and the sockets being accepted while one is evicted.
pub const RESERVED_FILES: u64 = 256;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the soft limit now in force (`None` when
/// it cannot be read).
pub fn raise_to_hard() -> Option<u64> {
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(error) => {
            tracing::warn!(error = %error, "cannot read the open-file limit");
            return None;
        }
    };
    if soft >= hard {
        return Some(soft);
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => {
            tracing::info!(from = soft, to = hard, "open-file limit raised");
            Some(hard)
        }
        Err(error) => {
            tracing::warn!(error = %error, soft, hard, "open-file limit not raised");
            Some(soft)
        }
    }
}

/// The connection cap: `wanted`, lowered to fit under `file_limit` with [`RESERVED_FILES`] to spare (at
/// least 16 connections, however low the limit).
pub fn connection_cap(wanted: usize, file_limit: Option<u64>) -> usize {
    let Some(limit) = file_limit else {
        return wanted;
    };
    let fits = usize::try_from(limit.saturating_sub(RESERVED_FILES)).unwrap_or(usize::MAX);
    wanted.min(fits).max(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_stays_below_the_file_limit() {
        assert_eq!(connection_cap(10_000, Some(1024)), 768);
        assert_eq!(connection_cap(500, Some(1_048_576)), 500);
        assert_eq!(connection_cap(500, None), 500);
        assert_eq!(connection_cap(500, Some(100)), 16);
    }
}
