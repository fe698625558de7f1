//! The report's "what changed, before → after" notes: each fix made because a bench run missed a target,
//! with the figures of the run that found the cause beside the same figures of this run.

use super::report::Table;

/// One fix and the figures it was meant to move.
pub struct Change {
    /// What changed and why, in a few words.
    pub what: &'static str,
    /// `(scenario, figure, value before the change)`; the figure names match the table's rows.
    pub figures: &'static [(&'static str, &'static str, &'static str)],
}

/// The fixes so far. "Before" is the full run of commit 6a13979 (2 CPUs shared by everything).
pub const CHANGES: &[Change] = &[Change {
    what: "Postgres pools no longer ping every connection before handing it out (infra-pg \
           PoolConfig::test_before_acquire, now false by default: one round trip less per statement; a \
           connection broken while idle fails its first query, which callers see as Unavailable and retry). \
           A pool as large as the worker's concurrency (64) was tried and dropped: throughput fell from 259 \
           to 189 jobs/s, as 64 connections contend on 2 CPUs shared with Postgres",
    figures: &[
        ("job throughput", "jobs/s", "259"),
        ("job throughput", "ratio jobs/s ÷ limit", "0.46"),
        ("pause bookkeeping", "p50 under the throughput run", "35.56 ms"),
        ("pause bookkeeping", "p99 under the throughput run", "100.32 ms"),
        ("pause bookkeeping", "p99 one at a time", "2.46 ms"),
    ],
}];

/// One note per change: "what: figure before → after, …", the after read from this run's table.
pub fn notes(table: &Table, changes: &[Change]) -> Vec<String> {
    changes
        .iter()
        .map(|change| {
            let figures: Vec<String> = change
                .figures
                .iter()
                .map(|(scenario, figure, before)| {
                    let after = table
                        .rows
                        .iter()
                        .find(|r| r.scenario == *scenario && r.figure == *figure)
                        .map_or("not measured", |r| r.value.as_str());
                    format!("{scenario} {figure}: {before} → {after}")
                })
                .collect();
            format!("Changed: {}. {}.", change.what, figures.join("; "))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_put_this_runs_figure_after_the_old_one() {
        let mut table = Table::default();
        table.info("throughput", "jobs/s", "600".into());
        let changes = [Change {
            what: "a fix",
            figures: &[("throughput", "jobs/s", "259"), ("throughput", "gone", "1")],
        }];
        let notes = notes(&table, &changes);
        assert_eq!(
            notes,
            ["Changed: a fix. throughput jobs/s: 259 → 600; throughput gone: 1 → not measured."]
        );
    }
}
