//! What this process last wrote to each job's hash, so that its next write sends only the fields that
//! changed.
//!
//! A build's stage move changes four or five of the hash's twenty-odd fields; sending all of them on each
//! of a build's seven writes was most of Redis's work per job. The memory is only a guess at what Redis
//! holds: the diff applies only while the hash still carries the revision it was computed from (a
//! compare-and-set in the script), and anything else (another writer, a flush, an eviction here) falls
//! back to writing the hash whole.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use domain::JobId;

use super::record::REVISION_FIELD;

/// A hash's fields, as [`super::record::to_fields`] lists them.
pub(crate) type Fields = Vec<(&'static str, String)>;

/// The fields last written per job, at most `capacity` jobs.
pub(crate) struct Written {
    capacity: usize,
    jobs: Mutex<HashMap<JobId, Fields>>,
}

/// The change from what was written to what is to be written; with no base, the whole hash.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Diff {
    /// The revision the hash must still carry for the diff to apply; empty for the whole hash.
    pub base_revision: String,
    /// Fields that were written and are now absent (a value cleared).
    pub removed: Vec<&'static str>,
    /// Fields new or different, the revision always among them.
    pub changed: Fields,
}

impl Diff {
    /// All of `fields`, replacing whatever the hash holds.
    pub(crate) fn whole(fields: Fields) -> Self {
        Self {
            base_revision: String::new(),
            removed: Vec::new(),
            changed: fields,
        }
    }
}

impl Written {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            jobs: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<JobId, Fields>> {
        // Each critical section is one lookup, insert or remove: a poisoned map is still consistent.
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The diff from the last write of `id` to `fields`; `None` when nothing is remembered.
    pub(crate) fn diff(&self, id: JobId, fields: &Fields) -> Option<Diff> {
        let jobs = self.lock();
        let before = jobs.get(&id)?;
        let base_revision = value(before, REVISION_FIELD)?.to_owned();
        let removed = before
            .iter()
            .filter(|(name, _)| value(fields, name).is_none())
            .map(|(name, _)| *name)
            .collect();
        let changed = fields
            .iter()
            .filter(|(name, v)| *name == REVISION_FIELD || value(before, name) != Some(v.as_str()))
            .cloned()
            .collect();
        Some(Diff {
            base_revision,
            removed,
            changed,
        })
    }

    /// Redis now holds `fields` for `id`. When full, an arbitrary other job is forgotten: its next write
    /// is a whole one.
    pub(crate) fn remember(&self, id: JobId, fields: Fields) {
        let mut jobs = self.lock();
        if jobs.len() >= self.capacity && !jobs.contains_key(&id) {
            if let Some(other) = jobs.keys().next().copied() {
                jobs.remove(&other);
            }
        }
        jobs.insert(id, fields);
    }

    /// What Redis holds for `id` is unknown (a newer record, an error, a delete).
    pub(crate) fn forget(&self, id: JobId) {
        self.lock().remove(&id);
    }
}

fn value<'a>(fields: &'a Fields, name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&'static str, &str)]) -> Fields {
        pairs.iter().map(|(n, v)| (*n, (*v).to_owned())).collect()
    }

    #[test]
    fn the_diff_holds_changed_and_new_fields_the_revision_and_the_removed_names() {
        let written = Written::new(8);
        let id = JobId::new();
        assert_eq!(written.diff(id, &fields(&[("rev", "1")])), None);
        written.remember(
            id,
            fields(&[
                ("rev", "1"),
                ("status", "code"),
                ("goal", "g"),
                ("msg", "m"),
            ]),
        );
        let diff = written
            .diff(
                id,
                &fields(&[
                    ("rev", "2"),
                    ("status", "deps"),
                    ("goal", "g"),
                    ("url", "u"),
                ]),
            )
            .expect("remembered");
        assert_eq!(diff.base_revision, "1");
        assert_eq!(diff.removed, vec!["msg"]);
        assert_eq!(
            diff.changed,
            fields(&[("rev", "2"), ("status", "deps"), ("url", "u")])
        );

        written.forget(id);
        assert_eq!(written.diff(id, &fields(&[("rev", "3")])), None);
    }

    #[test]
    fn a_full_memory_forgets_another_job_to_remember_a_new_one() {
        let written = Written::new(2);
        let ids = [JobId::new(), JobId::new(), JobId::new()];
        for id in ids {
            written.remember(id, fields(&[("rev", "1")]));
        }
        let remembered = ids
            .iter()
            .filter(|id| written.diff(**id, &fields(&[("rev", "2")])).is_some())
            .count();
        assert_eq!(remembered, 2);
        assert!(written.diff(ids[2], &fields(&[("rev", "2")])).is_some());
    }
}
