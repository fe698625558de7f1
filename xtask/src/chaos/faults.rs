//! The faults, drawn from a seeded generator: which, when, and on which process. The same seed gives the
//! same schedule (what each fault meets still depends on timing).

use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// kill -9 of a job-worker, started again after a pause.
    KillWorker,
    /// kill -9 of the api-server, started again after a pause.
    KillApi,
    /// SIGSTOP of a job-worker for longer than its lease, then SIGCONT.
    StallWorker,
    /// FLUSHALL of the campaign's private Redis.
    FlushRedis,
    /// Every Slipway backend of the campaign's database terminated.
    TerminatePostgres,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::KillWorker,
        Kind::KillApi,
        Kind::StallWorker,
        Kind::FlushRedis,
        Kind::TerminatePostgres,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Kind::KillWorker => "kill -9 job-worker",
            Kind::KillApi => "kill -9 api-server",
            Kind::StallWorker => "SIGSTOP job-worker past its lease",
            Kind::FlushRedis => "Redis FLUSHALL",
            Kind::TerminatePostgres => "Postgres backends terminated",
        }
    }
}

/// A fault at an offset into the fault window.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub at: Duration,
    pub kind: Kind,
    /// How long the process stays down or stopped (kills and stalls).
    pub hold: Duration,
    /// Picks the worker (an index into the live ones, modulo their number).
    pub pick: usize,
}

/// Faults every `gap` (drawn between its bounds) until the window ends: every kind once first, in a
/// shuffled order, then kinds drawn at random. A stall lasts the lease TTL plus 1–3 s.
pub fn schedule(
    rng: &mut StdRng,
    window: Duration,
    gap: (Duration, Duration),
    lease_ttl: Duration,
) -> Vec<Planned> {
    let mut first = Kind::ALL.to_vec();
    first.shuffle(rng);
    let mut plan = Vec::new();
    let mut at = Duration::ZERO;
    loop {
        at += rng.gen_range(gap.0..=gap.1);
        if at >= window {
            break;
        }
        let kind = if plan.len() < first.len() {
            first[plan.len()]
        } else {
            Kind::ALL[rng.gen_range(0..Kind::ALL.len())]
        };
        let hold = match kind {
            Kind::StallWorker => lease_ttl + Duration::from_millis(rng.gen_range(1000..=3000)),
            Kind::KillWorker | Kind::KillApi => Duration::from_millis(rng.gen_range(500..=3000)),
            Kind::FlushRedis | Kind::TerminatePostgres => Duration::ZERO,
        };
        plan.push(Planned {
            at,
            kind,
            hold,
            pick: rng.gen_range(0..1000),
        });
    }
    plan
}

/// When each build is submitted: spread over the first `share` of the window.
pub fn submissions(rng: &mut StdRng, builds: usize, window: Duration, share: f64) -> Vec<Duration> {
    let span = window.mul_f64(share).as_millis().max(1) as u64;
    let mut at: Vec<Duration> = (0..builds)
        .map(|_| Duration::from_millis(rng.gen_range(0..span)))
        .collect();
    at.sort();
    at
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn a_seed_gives_one_schedule_with_every_kind_first() {
        let plan = |seed| {
            schedule(
                &mut StdRng::seed_from_u64(seed),
                Duration::from_secs(120),
                (Duration::from_secs(3), Duration::from_secs(8)),
                Duration::from_secs(10),
            )
        };
        assert_eq!(plan(7), plan(7));
        assert_ne!(plan(7), plan(8));
        let p = plan(7);
        let mut first: Vec<Kind> = p[..5].iter().map(|f| f.kind).collect();
        first.sort();
        assert_eq!(first, Kind::ALL.to_vec());
        assert!(p.iter().all(|f| f.at < Duration::from_secs(120)));
        assert!(p
            .iter()
            .filter(|f| f.kind == Kind::StallWorker)
            .all(|f| f.hold > Duration::from_secs(10)));
    }
}
