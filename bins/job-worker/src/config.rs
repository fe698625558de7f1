//! The job-worker's settings: every one an environment variable and a flag. A missing or invalid one stops
//! the process at start with clap's one-line error naming it.

use std::time::Duration;

use domain::usecases::pipeline::PipelineConfig;
use domain::usecases::reconcile::ReconcileConfig;
use domain::PausePolicy;

pub use bin_support::{LogFormat, RuntimeArgs, RuntimeKind, Secret, TierArgs};

use crate::worker::WorkerSettings;

/// Who writes the app's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GeneratorKind {
    /// A small dependency-free Node app showing the goal.
    Template,
    /// A configured program (an LLM agent): the goal on stdin, `{"files": {…}}` on stdout.
    Command,
}

/// Settings of the job-worker.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "job-worker",
    about = "Slipway's build worker: takes jobs off the queue and builds them"
)]
pub struct Config {
    /// Postgres connection URL.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/slipway"
    )]
    pub database_url: Secret,

    /// Redis connection URL.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: Secret,

    /// Prefix of every Redis key this deployment uses (the same as the api-server's).
    #[arg(long, env = "REDIS_PREFIX", default_value = "slipway")]
    pub redis_prefix: String,

    /// How many builds this process runs at once.
    #[arg(long, env = "WORKER_CONCURRENCY", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=256))]
    pub worker_concurrency: u32,

    /// When a READY build's sandbox is paused: `immediate`, `idle:<seconds>` or `never`.
    #[arg(long, env = "PAUSE_POLICY", default_value = "immediate")]
    pub pause_policy: PausePolicy,

    #[command(flatten)]
    pub runtime: RuntimeArgs,

    /// The queue's slot limits must be the api-server's: the same settings.
    #[command(flatten)]
    pub limits: TierArgs,

    /// Code generator: `template` (default) or `command`.
    #[arg(long, env = "GENERATOR", value_enum, default_value = "template")]
    pub generator: GeneratorKind,

    /// The generator program and its arguments, split on whitespace (required with `GENERATOR=command`).
    #[arg(
        long,
        env = "GENERATOR_COMMAND",
        required_if_eq("generator", "command")
    )]
    pub generator_command: Option<String>,

    /// How long the code generator may take, in seconds.
    #[arg(long, env = "GENERATOR_TIMEOUT_SECS", default_value_t = 600,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub generator_timeout_secs: u64,

    /// How long `npm install` may take, in seconds.
    #[arg(long, env = "INSTALL_TIMEOUT_SECS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub install_timeout_secs: u64,

    /// How long the dev server has to answer, in seconds.
    #[arg(long, env = "READINESS_TIMEOUT_SECS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub readiness_timeout_secs: u64,

    /// A sandbox's lifetime at the provider, in seconds from its creation.
    #[arg(long, env = "SANDBOX_TIMEOUT_SECS", default_value_t = 1800,
          value_parser = clap::value_parser!(u64).range(60..))]
    pub sandbox_timeout_secs: u64,

    /// How long a lease lasts without a heartbeat, in seconds (heartbeats come every third of it).
    #[arg(long, env = "LEASE_TTL_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(3..))]
    pub lease_ttl_secs: u64,

    /// On SIGTERM or Ctrl-C, how long running builds may go on before they are stopped and requeued.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,

    /// How long to wait before asking the queue again when it had nothing, in milliseconds.
    #[arg(long, env = "POLL_INTERVAL_MS", default_value_t = 500,
          value_parser = clap::value_parser!(u64).range(10..))]
    pub poll_interval_ms: u64,

    /// A resumed sandbox is paused again after this many seconds without preview activity.
    #[arg(long, env = "IDLE_PAUSE_SECS", default_value_t = 600)]
    pub idle_pause_secs: u64,

    /// Days a finished build's archived log is kept (0 keeps them forever). Purged hourly by every worker.
    #[arg(long, env = "LOG_RETENTION_DAYS", default_value_t = 30)]
    pub log_retention_days: u64,

    /// Seconds between two reconciler passes (0 turns the reconciler off in this process).
    #[arg(long, env = "RECONCILE_INTERVAL_SECS", default_value_t = 15)]
    pub reconcile_interval_secs: u64,

    /// A building job with no lease at all (lost with Redis) is recovered after this many seconds without
    /// a transition (default: the lease TTL, the longest a live build goes without seeing its lease gone).
    #[arg(long, env = "ORPHAN_AFTER_SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub orphan_after_secs: Option<u64>,

    /// A READY sandbox left running by a failed pause is retried this many seconds after READY.
    #[arg(long, env = "PAUSE_RETRY_AFTER_SECS", default_value_t = 5)]
    pub pause_retry_after_secs: u64,

    /// The wait after a failed pause retry, in seconds; doubled after each failure.
    #[arg(long, env = "PAUSE_BACKOFF_BASE_SECS", default_value_t = 2,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub pause_backoff_base_secs: u64,

    /// The longest wait between two pause retries, in seconds.
    #[arg(long, env = "PAUSE_BACKOFF_MAX_SECS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub pause_backoff_max_secs: u64,

    /// A `pausing` record this many seconds old lost its pauser: the provider is asked and the pause
    /// finished.
    #[arg(long, env = "PAUSING_STALE_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub pausing_stale_secs: u64,

    /// A `resuming` record this many seconds old was left by a crash and is set to the provider's state
    /// (longer than a resume may take).
    #[arg(long, env = "RESUMING_STALE_SECS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub resuming_stale_secs: u64,

    /// Where to serve `GET /metrics` (Prometheus), e.g. `127.0.0.1:9464`; not served when unset.
    #[arg(long, env = "WORKER_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// This worker's name on its leases (default `<hostname>-<pid>`).
    #[arg(long, env = "WORKER_ID")]
    pub worker_id: Option<String>,

    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "pretty")]
    pub log_format: LogFormat,
}

impl Config {
    /// The run loop's settings, the pipeline's included.
    pub fn worker_settings(&self) -> WorkerSettings {
        let pipeline = PipelineConfig {
            pause_policy: self.pause_policy,
            sandbox_timeout: Duration::from_secs(self.sandbox_timeout_secs),
            generate_timeout: Duration::from_secs(self.generator_timeout_secs),
            install_timeout: Duration::from_secs(self.install_timeout_secs),
            readiness_deadline: Duration::from_secs(self.readiness_timeout_secs),
            ..PipelineConfig::default()
        };
        WorkerSettings {
            worker_id: self.worker_id.clone().unwrap_or_else(default_worker_id),
            concurrency: usize::try_from(self.worker_concurrency).unwrap_or(1),
            lease_ttl: Duration::from_secs(self.lease_ttl_secs),
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            pipeline,
        }
    }
}

impl Config {
    /// The reconciler's policy: this deployment's pause policy and intervals, defaults otherwise.
    /// How long archived logs are kept; `None`: forever.
    pub fn log_retention(&self) -> Option<Duration> {
        (self.log_retention_days > 0)
            .then(|| Duration::from_secs(self.log_retention_days * 24 * 3600))
    }

    pub fn reconcile_config(&self) -> ReconcileConfig {
        let secs = Duration::from_secs;
        ReconcileConfig {
            pause_policy: self.pause_policy,
            idle_pause_after: secs(self.idle_pause_secs),
            pause_grace: secs(self.pause_retry_after_secs),
            pause_backoff_base: secs(self.pause_backoff_base_secs),
            pause_backoff_max: secs(self.pause_backoff_max_secs),
            pausing_stale_after: secs(self.pausing_stale_secs),
            orphan_after: secs(self.orphan_after_secs.unwrap_or(self.lease_ttl_secs)),
            stale_transition_after: secs(self.resuming_stale_secs),
            ..ReconcileConfig::default()
        }
    }
}

/// `<hostname>-<pid>`: unique among the workers sharing one queue.
fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_owned());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("job-worker").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.worker_concurrency, 4);
        assert_eq!(c.pause_policy, PausePolicy::Immediate);
        assert_eq!(c.runtime.sandbox_runtime, RuntimeKind::Local);
        assert_eq!(c.generator, GeneratorKind::Template);
        assert_eq!(c.redis_prefix, "slipway");
        let s = c.worker_settings();
        assert_eq!(s.concurrency, 4);
        assert_eq!(s.lease_ttl, Duration::from_secs(60));
        assert!(s.worker_id.ends_with(&format!("-{}", std::process::id())));
    }

    #[test]
    fn a_bad_setting_is_refused_naming_it() {
        let err = parse(&["--pause-policy", "sometimes"]).unwrap_err();
        assert!(err.to_string().contains("--pause-policy"), "{err}");
        let err = parse(&["--worker-concurrency", "0"]).unwrap_err();
        assert!(err.to_string().contains("--worker-concurrency"), "{err}");
    }

    #[test]
    fn e2b_needs_its_key_and_command_needs_its_command() {
        let err = parse(&["--sandbox-runtime", "e2b"]).unwrap_err();
        assert!(err.to_string().contains("--e2b-api-key"), "{err}");
        let err = parse(&["--generator", "command"]).unwrap_err();
        assert!(err.to_string().contains("--generator-command"), "{err}");
    }

    #[test]
    fn secrets_never_print() {
        let c = parse(&[
            "--database-url",
            "postgres://u:pw@h/db",
            "--e2b-api-key",
            "e2b_123",
        ])
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("pw@"));
        assert!(!shown.contains("e2b_123"));
    }

    #[test]
    fn a_lost_build_is_found_within_a_lease_ttl_unless_told_otherwise() {
        let c = parse(&["--lease-ttl-secs", "12"]).unwrap();
        assert_eq!(c.reconcile_config().orphan_after, Duration::from_secs(12));
        let c = parse(&["--lease-ttl-secs", "12", "--orphan-after-secs", "30"]).unwrap();
        assert_eq!(c.reconcile_config().orphan_after, Duration::from_secs(30));
        let r = parse(&[]).unwrap().reconcile_config();
        assert_eq!(r.pause_grace, Duration::from_secs(5));
        assert_eq!(r.pause_backoff_base, Duration::from_secs(2));
    }

    #[test]
    fn idle_policy_parses() {
        let c = parse(&["--pause-policy", "idle:30"]).unwrap();
        assert_eq!(c.pause_policy, PausePolicy::Idle(Duration::from_secs(30)));
    }
}
