//! The tier limits as settings: the domain's defaults with a deployment's overrides. The api-server
//! (queue cap, daily limits) and the job-worker (the queue's slot limits) read the same ones.

use domain::TierTable;

#[derive(Debug, Clone, clap::Args)]
pub struct TierArgs {
    /// Most jobs waiting in the queue at once.
    #[arg(long, env = "QUEUE_CAP", default_value_t = domain::GLOBAL_QUEUE_CAP)]
    pub queue_cap: usize,

    /// Most jobs one founder may have scheduled (past the daily limit) at once; more are refused (429).
    #[arg(long, env = "SCHEDULED_CAP", default_value_t = domain::SCHEDULED_CAP)]
    pub scheduled_cap: u32,

    /// Daily job limit of the bootstrapper tier (default 5).
    #[arg(long, env = "DAILY_JOBS_BOOTSTRAPPER")]
    pub daily_jobs_bootstrapper: Option<u32>,

    /// Daily job limit of the partner tier (default 50).
    #[arg(long, env = "DAILY_JOBS_PARTNER")]
    pub daily_jobs_partner: Option<u32>,

    /// Daily job limit of the cto_scale tier (default 200).
    #[arg(long, env = "DAILY_JOBS_CTO_SCALE")]
    pub daily_jobs_cto_scale: Option<u32>,
}

impl TierArgs {
    /// The tier table in force.
    pub fn tiers(&self) -> TierTable {
        let mut t = TierTable {
            queue_cap: self.queue_cap,
            scheduled_cap: self.scheduled_cap,
            ..TierTable::default()
        };
        if let Some(n) = self.daily_jobs_bootstrapper {
            t.bootstrapper.daily_jobs = n;
        }
        if let Some(n) = self.daily_jobs_partner {
            t.partner.daily_jobs = n;
        }
        if let Some(n) = self.daily_jobs_cto_scale {
            t.cto_scale.daily_jobs = n;
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        tiers: TierArgs,
    }

    #[test]
    fn overrides_apply_and_the_rest_stay_default() {
        let cli = Cli::parse_from(["x", "--queue-cap", "1", "--daily-jobs-partner", "7"]);
        let t = cli.tiers.tiers();
        assert_eq!(t.queue_cap, 1);
        assert_eq!(t.partner.daily_jobs, 7);
        assert_eq!(t.bootstrapper, TierTable::default().bootstrapper);
    }
}
