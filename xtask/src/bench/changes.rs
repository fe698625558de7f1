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

/// The fixes so far. "Before" is the full runs of commit 6a13979 (2 CPUs shared by everything).
pub const CHANGES: &[Change] = &[
    Change {
        what: "the status route's profile (perf, whole system) was flat: kernel TCP on two sockets per request \
               about a third of api-server's CPU, malloc/free 8%, cloning the handler state (a score of Arcs, \
               once per extractor) 2.5%, JWT validation rules rebuilt per request, a getrandom call per request \
               id. The state is now one Arc, the JWT rules are built once, request ids use uuid's fast-rng. \
               mimalloc was tried and dropped: the same requests/s within noise, api-server RSS 29 → 42 MiB",
        figures: &[
            ("status reads", "ratio status / HGETALL", "0.23–0.28"),
            ("status reads", "p99", "6.6 ms"),
            ("status reads", "api-server peak RSS after the status reads", "23 MiB"),
        ],
    },
    Change {
        what: "Postgres pools no longer ping every connection before handing it out (infra-pg \
               connect_with: test_before_acquire off, one round trip less per statement; a \
               connection broken while idle fails its first query, which callers see as Unavailable and retry). \
               Larger worker pools were tried and dropped: 64 connections gave 189 jobs/s and 24 gave 315, \
               against 343–396 with job-worker's 10, as more backends contend on 2 CPUs shared with Postgres",
        figures: &[
            ("job throughput", "jobs/s", "259"),
            ("job throughput", "ratio jobs/s ÷ limit", "0.46"),
            ("pause bookkeeping", "p50 under the throughput run", "35.56 ms"),
            ("pause bookkeeping", "p99 under the throughput run", "100.32 ms"),
            ("pause bookkeeping", "p99 one at a time", "2.46 ms"),
        ],
    },
];

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
