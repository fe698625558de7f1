//! What the campaign checks, read from the outside: the jobs in Postgres, their hashes in Redis, and the
//! sandboxes on disk with their processes in `/proc` (not through the runtime, whose own reads repair
//! what they find).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use anyhow::Context;
use fred::prelude::{Client, HashesInterface};
use infra_redis::Keys;
use sqlx::PgPool;
use uuid::Uuid;

/// A job as Postgres records it (the columns the checks compare).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct JobRow {
    pub id: Uuid,
    pub status: String,
    pub sandbox_id: Option<String>,
    pub sandbox_state: String,
    pub sandbox_paused: bool,
    pub preview_url: Option<String>,
    pub build_version: Option<String>,
    pub attempts: i32,
}

/// A sandbox directory and what its processes are doing.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub id: String,
    pub job_id: Option<Uuid>,
    /// Some process of it is alive (not a zombie).
    pub live: bool,
    /// Some live process of it is not stopped: it runs (and would bill).
    pub running: bool,
}

/// One observation: every number the campaign reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Jobs (accepted or found in Postgres) that are missing or not finished.
    pub lost: usize,
    pub failed: usize,
    pub paused_but_running: usize,
    pub paused_but_dead: usize,
    pub ready_left_running: usize,
    pub leaks: usize,
    pub redis_differs: usize,
    pub two_live_sandboxes: usize,
    /// Jobs whose sandbox is between two states (pausing, resuming): not quiet yet.
    pub in_transition: usize,
}

impl Counts {
    /// Nothing left to settle and nothing wrong.
    pub fn quiescent(&self) -> bool {
        *self == Counts::default()
    }
}

/// Reads everything and counts. `accepted` are the job ids the API answered 201 for.
pub async fn observe(
    pool: &PgPool,
    redis: &Client,
    keys: &Keys,
    root: &Path,
    accepted: &HashSet<Uuid>,
) -> anyhow::Result<Counts> {
    let jobs: Vec<JobRow> = sqlx::query_as(
        "SELECT id, status::text AS status, sandbox_id, sandbox_state::text AS sandbox_state, \
                sandbox_paused, preview_url, build_version, attempts FROM jobs",
    )
    .fetch_all(pool)
    .await
    .context("cannot read the jobs")?;
    let sandboxes = sandboxes(root);
    let mut counts = Counts::default();

    let known: HashSet<Uuid> = jobs.iter().map(|j| j.id).collect();
    counts.lost += accepted.difference(&known).count();
    let by_id: HashMap<&str, &Sandbox> = sandboxes.iter().map(|s| (s.id.as_str(), s)).collect();
    for job in &jobs {
        match job.status.as_str() {
            "ready" => {}
            "failed" => {
                counts.failed += 1;
                continue;
            }
            _ => {
                counts.lost += 1;
                continue;
            }
        }
        if matches!(job.sandbox_state.as_str(), "pausing" | "resuming") {
            counts.in_transition += 1;
        }
        let sandbox = job.sandbox_id.as_deref().and_then(|id| by_id.get(id));
        match (job.sandbox_paused, sandbox) {
            (true, Some(s)) if s.running => counts.paused_but_running += 1,
            (true, Some(s)) if !s.live => counts.paused_but_dead += 1,
            (true, None) => counts.paused_but_dead += 1,
            (false, Some(s)) if s.running => counts.ready_left_running += 1,
            _ => {}
        }
        if !hash_matches(redis, keys, job).await? {
            counts.redis_differs += 1;
        }
    }

    // A sandbox is needed only by the READY job that records it.
    let owned: HashSet<&str> = jobs
        .iter()
        .filter(|j| j.status == "ready")
        .filter_map(|j| j.sandbox_id.as_deref())
        .collect();
    counts.leaks = sandboxes
        .iter()
        .filter(|s| !owned.contains(s.id.as_str()))
        .count();
    let mut live_per_job: HashMap<Uuid, usize> = HashMap::new();
    for s in sandboxes.iter().filter(|s| s.live) {
        if let Some(job) = s.job_id {
            *live_per_job.entry(job).or_default() += 1;
        }
    }
    counts.two_live_sandboxes = live_per_job.values().filter(|n| **n > 1).count();
    Ok(counts)
}

/// The fields the status route answers from, in the hash and in the row.
async fn hash_matches(redis: &Client, keys: &Keys, job: &JobRow) -> anyhow::Result<bool> {
    let key = keys.job(domain::JobId::from_uuid(job.id));
    let hash: HashMap<String, String> = redis
        .hgetall(&key)
        .await
        .with_context(|| format!("cannot read {key}"))?;
    let field = |name: &str| hash.get(name).map(String::as_str);
    Ok(field("status") == Some(job.status.as_str())
        && field("sandbox_state") == Some(job.sandbox_state.as_str())
        && field("sandbox_paused") == Some(if job.sandbox_paused { "true" } else { "false" })
        && field("sandbox_id") == job.sandbox_id.as_deref()
        && field("preview_url") == job.preview_url.as_deref()
        && field("build_version") == job.build_version.as_deref())
}

/// Every sandbox directory under `root` (one with a `state.json`) and whether its processes live and run.
pub fn sandboxes(root: &Path) -> Vec<Sandbox> {
    let groups = process_groups();
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path().join("state.json")) else {
            continue;
        };
        let state: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let mut live = false;
        let mut running = false;
        for pgid in state["groups"].as_array().into_iter().flatten() {
            let Some(states) = pgid.as_i64().and_then(|g| groups.get(&(g as i32))) else {
                continue;
            };
            for s in states {
                if !matches!(s, 'Z' | 'X' | 'x') {
                    live = true;
                    running |= !matches!(s, 'T' | 't');
                }
            }
        }
        out.push(Sandbox {
            id: entry.file_name().to_string_lossy().into_owned(),
            job_id: state["metadata"]["job_id"]
                .as_str()
                .and_then(|j| Uuid::parse_str(j).ok()),
            live,
            running,
        });
    }
    out
}

/// Every process's state letter, by process group, from `/proc/<pid>/stat`.
fn process_groups() -> HashMap<i32, Vec<char>> {
    let mut groups: HashMap<i32, Vec<char>> = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return groups;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_str().and_then(|s| s.parse::<i32>().ok()).is_none() {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The command name is in parentheses and may hold anything: the fields start after the last ')'.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let (Some(state), Some(_ppid), Some(pgrp)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if let (Some(state), Ok(pgrp)) = (state.chars().next(), pgrp.parse()) {
            groups.entry(pgrp).or_default().push(state);
        }
    }
    groups
}
