//! Every Redis key Slipway uses, spelled once.

use domain::JobId;

/// Builds keys under a prefix.
///
/// Hash tags (the part in braces) decide the Redis Cluster slot: a job's hash and its channel share
/// `{<job id>}`, and every queue key shares `{q}`, so each Lua script touches one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>:job:{<id>}`: the live job hash.
    pub fn job(&self, id: JobId) -> String {
        format!("{}:job:{{{id}}}", self.prefix)
    }

    /// `<prefix>:job:{<id>}:events`: the job's pub/sub channel.
    pub fn job_events(&self, id: JobId) -> String {
        format!("{}:job:{{{id}}}:events", self.prefix)
    }

    /// `<prefix>:job:{<id>}:logs`: the job's live log, a capped stream.
    pub fn job_logs(&self, id: JobId) -> String {
        format!("{}:job:{{{id}}}:logs", self.prefix)
    }

    /// `<prefix>:job:{<id>}:logs:new`: the pub/sub channel that wakes the log's followers after each append.
    pub fn job_logs_wake(&self, id: JobId) -> String {
        format!("{}:job:{{{id}}}:logs:new", self.prefix)
    }

    /// `<prefix>:jobs:failed`: the pub/sub channel every job's `failed` event is published on as well.
    pub fn job_failures(&self) -> String {
        format!("{}:jobs:failed", self.prefix)
    }

    /// `<prefix>:{q}:pending`: sorted set of waiting job ids, by score (lowest served first).
    pub fn queue_pending(&self) -> String {
        self.queue("pending")
    }

    /// `<prefix>:{q}:leases`: sorted set of leased job ids, by lease deadline (ms since the epoch).
    pub fn queue_leases(&self) -> String {
        self.queue("leases")
    }

    /// `<prefix>:{q}:owners`: hash job id → worker id holding its lease.
    pub fn queue_owners(&self) -> String {
        self.queue("owners")
    }

    /// `<prefix>:{q}:meta`: hash job id → JSON `{u, p, t, s}` (user, project, tier, original score).
    pub fn queue_meta(&self) -> String {
        self.queue("meta")
    }

    /// `<prefix>:{q}:counter`: the FIFO counter added to scores.
    pub fn queue_counter(&self) -> String {
        self.queue("counter")
    }

    /// `<prefix>:{q}:reclaimed`: sorted set of reclaimed job ids by reclaim time, whose meta is kept for a
    /// while so a re-enqueue restores their place.
    pub fn queue_reclaimed(&self) -> String {
        self.queue("reclaimed")
    }

    /// `<prefix>:{q}:slots:`: the scripts append `user:<user id>` or `project:<project id>` to name the set
    /// of job ids holding that user's or project's concurrency slots.
    pub fn queue_slots_prefix(&self) -> String {
        self.queue("slots:")
    }

    fn queue(&self, name: &str) -> String {
        format!("{}:{{q}}:{name}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_keys_share_a_hash_tag() {
        let keys = Keys::new("sw");
        let id = JobId::new();
        assert_eq!(keys.job(id), format!("sw:job:{{{id}}}"));
        assert_eq!(keys.job_events(id), format!("sw:job:{{{id}}}:events"));
    }

    #[test]
    fn queue_keys_share_a_hash_tag() {
        let keys = Keys::new("sw");
        assert_eq!(keys.queue_pending(), "sw:{q}:pending");
        assert_eq!(keys.queue_slots_prefix(), "sw:{q}:slots:");
    }
}
