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

/// The fixes so far. "Before" is the full runs of commit 6a13979 for the first two, runs of d819da9 on the
/// same machine for the next ones, the five full runs of 25ba476 for the connection change, the full runs
/// of c4f34f5 and 37085ee for the sandbox record, quick runs of 6aaafa4 in the same sitting for the cancel
/// channel, and the six full runs of 6aaafa4's job path for the last (2 CPUs shared by everything).
pub const CHANGES: &[Change] = &[
    Change {
        what: "the status route's profile (perf, whole system) was flat: kernel TCP on two sockets per request \
               about a third of api-server's CPU, malloc/free 8%, cloning the handler state (a score of Arcs, \
               once per extractor) 2.5%, JWT validation rules rebuilt per request, a getrandom call per request \
               id. The state is now one Arc, the JWT rules are built once, request ids use uuid's fast-rng. \
               mimalloc was tried and dropped then: the same requests/s within noise, api-server RSS 29 → 42 MiB \
               (it came back below, once measured by CPU per read)",
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
    Change {
        what: "glibc's malloc was a fifth of api-server's CPU on status reads (malloc_consolidate, run by \
               every allocation of 1 KiB or more, among the top symbols): api-server, job-worker and the \
               bench (which hosts the worker) now use mimalloc. Measured this time by the api-server's CPU per \
               read, which noise moves less than requests/s. The load generator is now one thread sending prebuilt \
               requests, as redis-benchmark does, instead of 50 HTTP clients",
        figures: &[
            ("status reads", "api-server CPU per status read", "72 µs"),
            ("status reads", "ratio status / HGETALL", "0.23–0.29"),
            ("status reads", "api-server peak RSS after the status reads", "22.7 MiB"),
        ],
    },
    Change {
        what: "during the throughput run the CPUs were busy (vmstat: 1–3% idle) and Postgres took over half \
               of them; its profile: TLS 18%, commits 16%, index inserts 14% (no update is HOT: status and \
               updated_at are indexed), CHECK constraints re-read per statement 9%. A job now costs fewer \
               round trips: the worker's read before the build is gone (the queued → starting \
               compare-and-set is the check and returns the row), leaving the queue counts the attempt in \
               that same write, the cancel watch's look after subscribing reads the Redis hash, and READY \
               locks the project in one statement instead of two. On a loopback host the bench connects \
               without TLS, Slipway and pgbench alike (it depended on the server's ssl setting)",
        figures: &[
            ("job throughput", "CPU per job, whole machine", "7.65 ms"),
            ("job throughput", "Postgres commits per job", "15.2–16.0"),
            ("job throughput", "jobs/s", "224–267"),
        ],
    },
    Change {
        what: "when the policy pauses at once, the READY write records the sandbox as pausing itself \
               (TransitionUpdate::sandbox_state), so READY → paused is one Postgres write instead of two; a \
               full run had just missed the one-at-a-time target on two stalled samples of 100",
        figures: &[
            ("pause bookkeeping", "p50 one at a time", "1.50–1.89 ms"),
            ("pause bookkeeping", "p99 one at a time", "2.03–6.77 ms"),
            ("pause bookkeeping", "p50 under the throughput run", "36.09–41.96 ms"),
        ],
    },
    Change {
        what: "the status route's profile was a third fred (a write per command, the reply decoded into a \
               map) and a fifth kernel TCP, half of it the Redis socket, for a hash that does not change \
               between polls of a READY job. The route now reads through an in-process cache \
               (infra-redis CachedLiveStore) on its own RESP3 connection with CLIENT TRACKING: Redis pushes \
               an invalidation when any client changes a hash it served, a read overtaken by an invalidation \
               is not kept, nothing is cached while tracking is not confirmed (start, any connection error \
               or reconnect), and no value is kept longer than 10 s. Event streams and use cases still read \
               Redis directly; this process's own writes drop its cached copy at once",
        figures: &[
            ("status reads", "api-server CPU per status read", "53.0–68.5 µs"),
            ("status reads", "ratio status / HGETALL", "0.31–0.32"),
            ("status reads", "p99", "3.29–4.40 ms"),
            ("status reads", "api-server peak RSS after the status reads", "38.6 MiB"),
        ],
    },
    Change {
        what: "a new profile of the throughput run (perf -a over the run only): Postgres half the busy time, \
               and in it ExecConstraints 12% (3.7% of all samples), mostly stringToNode re-reading the long \
               CHECK lists of status, tier and sandbox_state from their stored text on every INSERT and \
               UPDATE. The lists are now domain types (migration 0003), whose check Postgres keeps parsed per \
               session: ExecConstraints fell to 1.1% of all samples. READY read every READY version of the \
               project inside a five-round-trip transaction (BEGIN, lock, read, update, COMMIT), linear in \
               the project's builds, and submit read them all too for the predicted version: a per-project \
               counter (migration 0004) makes READY one statement that locks the job, increments the counter \
               under the project row's lock and applies only with a version, and submit takes its prediction \
               from the project row it already reads (one statement less per job). Before: the two full runs \
               of aa66304 (nothing on the job path changed between it and this)",
        figures: &[
            ("job throughput", "CPU per job, whole machine", "5.55–6.63 ms"),
            ("job throughput", "jobs/s", "291–341"),
            (
                "job throughput",
                "Postgres table scans per job (statements, lower bound)",
                "16.6",
            ),
            ("job throughput", "Postgres commits per job", "11.0"),
        ],
    },
    Change {
        what: "with the cache, the first full run read api-server's peak RSS after the status reads at 57 MiB, \
               over the target; it grew with the request rate, not the cached jobs. The Prometheus recorder \
               keeps every histogram sample until an upkeep folds it into the buckets, and only a scrape of \
               /metrics ran one: 1.4 million request latencies held in memory, and in production a process \
               nobody scrapes grew without bound. A thread now runs the upkeep every second (bin-support \
               metrics::install, api-server and job-worker alike). Before: a quick run with the full run's \
               2,000 jobs and 20 s",
        figures: &[(
            "status reads",
            "api-server peak RSS after the status reads",
            "50.7–57.0 MiB",
        )],
    },
    Change {
        what: "sqlx 0.8 pings every connection as it goes back to its pool (PoolConnection::return_to_pool, \
               not configurable): a round trip more per statement. The repository now hands connections from \
               statement to statement itself (infra-pg connections.rs): a connection whose statement failed or \
               was cancelled, or that has been out of the pool for a minute, goes back through sqlx's pool and \
               its checks; leases take all the pool's connections but one, which stays for the pool's direct \
               callers (readiness, metrics, migrations). Quick runs of 4,000 jobs, alternating: 463 and 477 \
               jobs/s at 4.06 and 3.62 ms of CPU per job, against 392 and 437 at 4.48 and 4.21 ms before. \
               The bench's completion check also counted every job of the run in Postgres every 50 ms (about \
               2.5 ms of Postgres each, charged to the figures); it now waits on the instant runtime's pause \
               count and asks Postgres every 500 ms until then",
        figures: &[
            ("job throughput", "jobs/s", "363–541"),
            ("job throughput", "CPU per job, whole machine", "3.52–5.10 ms"),
            ("job throughput", "ratio jobs/s ÷ limit", "0.21–0.29"),
        ],
    },
    Change {
        what: "a profile of the worker alone (perf --call-graph dwarf over the throughput run) put a third of \
               its CPU in system calls, most of it sending on loopback sockets: its cost follows its round \
               trips. A build recorded its new sandbox in a write of its own, mirrored to Redis, then moved to \
               code in the next write. The move to code now records the sandbox in the same statement (the \
               transition's sandbox_id and sandbox_state), so no crash can leak it still; when that move \
               cannot be made (a cancel landed during the create), the sandbox is recorded alone, then killed. \
               One Postgres statement and commit and one Redis script less per build. Quick runs of 4,000 \
               jobs, alternating: 469 and 430 jobs/s at 4.10 and 4.26 ms of CPU per job, against 388 and 361 \
               at 4.66 and 5.04 ms before",
        figures: &[
            ("job throughput", "jobs/s", "316–414"),
            ("job throughput", "Postgres commits per job", "9.1–9.8"),
            ("job throughput", "Postgres table scans per job (statements, lower bound)", "12.0–12.5"),
            ("job throughput", "Redis commands per job", "80.0"),
            ("job throughput", "ratio jobs/s ÷ limit", "0.36–0.46"),
        ],
    },
    Change {
        what: "the ratio still missed in four of six full runs, with jobs/s under 500 in all of them. A \
               profile of the bench process (worker and submitting client) put a quarter of its CPU in \
               context switches and a third in the kernel: its cost follows its messages. Each build \
               subscribed to its job's channel to see a cancel (SUBSCRIBE, a hash read, UNSUBSCRIBE), and so \
               was sent back every stage event it published itself. A failed event is now also published on \
               one jobs:failed channel, which each worker follows once and routes to the build it names \
               (job-worker cancels.rs); the heartbeat stays the fallback. Quick runs of 4,000 jobs, \
               alternating with the code before: bench and worker 0.65–0.68 ms of CPU per job against \
               0.78–0.81, Redis 0.39–0.41 against 0.42–0.43",
        figures: &[
            ("job throughput", "CPU per job, whole machine", "2.98–3.07 ms"),
            (
                "job throughput",
                "CPU per job by process: Postgres, bench and worker, api-server, Redis",
                "1.45–1.50 / 0.78–0.81 / 0.18 / 0.42–0.43 ms",
            ),
            ("job throughput", "Redis commands per job", "76.0"),
        ],
    },
    Change {
        what: "Redis's commandstats put its time per job in scripts (13 per job, about 30 µs each), and most \
               of that in the job-hash save, which deleted the hash and wrote all of its twenty-odd fields on \
               each of a build's seven writes, where a stage move changes four or five. The worker's store now \
               remembers the fields it last wrote per job (infra-redis live/written.rs) and sends the change \
               alone, applied only while the hash still carries the revision it was computed from; anything \
               else (another writer, a flush, an eviction) is written whole. redis-benchmark on one job hash, \
               pipelined, in one sitting: 81k–88k full saves/s against 145k–159k saves of a stage move's \
               change. The bench also submits its jobs from the load generator's thread, prebuilt POSTs over \
               32 keep-alive connections, instead of reqwest on the worker's runtime",
        figures: &[
            ("job throughput", "Redis commands per job", "72.0"),
            ("job throughput", "jobs/s", "343–424"),
            ("job throughput", "ratio jobs/s ÷ limit", "0.31–0.59"),
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
