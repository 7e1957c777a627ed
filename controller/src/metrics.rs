//! Counters the controller keeps about itself, rendered in Prometheus' text format.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::OnceLock;

#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1)
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A gauge that may be negative (-1 for "unknown").
pub struct SignedGauge(AtomicI64);

impl Default for SignedGauge {
    fn default() -> Self {
        SignedGauge(AtomicI64::new(-1))
    }
}

impl SignedGauge {
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
pub struct Metrics {
    pub lines_ingested: Counter,
    pub ingest_flushes: Counter,
    pub ingest_errors: Counter,
    /// 1 while log lines are written with LOAD DATA LOCAL INFILE, 0 when with INSERTs.
    pub ingest_bulk_load: Gauge,
    pub jobs_dispatched: Counter,
    pub jobs_finished: Counter,
    /// Shared commits of starts and outcomes that failed and were recorded one by one instead.
    pub outcome_batches_split: Counter,
    pub agents_connected: Gauge,
    pub handshakes_refused: Counter,
    pub revision_bytes_served: Counter,
    /// Whether a read replica is configured: its rows are shown only then.
    replica: AtomicBool,
    /// Seconds the read replica is behind the primary; -1 when unknown.
    pub replica_lag_seconds: SignedGauge,
    /// 1 while pages read from the replica.
    pub replica_in_use: Gauge,
    /// Reads the replica answered.
    pub replica_reads: Counter,
    /// Reads meant for the replica that the primary answered (replica bypassed or failing).
    pub replica_fallback_reads: Counter,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

pub fn global() -> &'static Metrics {
    METRICS.get_or_init(Metrics::default)
}

impl Metrics {
    /// Shows the read replica's rows from now on.
    pub fn replica_configured(&self) {
        self.replica.store(true, Ordering::Relaxed);
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let rows: [(&str, &str, &str, u64); 10] = [
            (
                "outpost_log_lines_ingested_total",
                "counter",
                "Log lines committed to the database.",
                self.lines_ingested.get(),
            ),
            (
                "outpost_ingest_flushes_total",
                "counter",
                "Log-line transactions committed (multi-row INSERTs or bulk loads).",
                self.ingest_flushes.get(),
            ),
            (
                "outpost_ingest_errors_total",
                "counter",
                "Failed log inserts (retried).",
                self.ingest_errors.get(),
            ),
            (
                "outpost_ingest_bulk_load",
                "gauge",
                "1 while log lines are written with LOAD DATA LOCAL INFILE; 0 while with INSERTs (SQLite, partitioned job_logs, or a server that refuses LOCAL INFILE).",
                self.ingest_bulk_load.get(),
            ),
            (
                "outpost_jobs_dispatched_total",
                "counter",
                "Jobs handed to agents.",
                self.jobs_dispatched.get(),
            ),
            (
                "outpost_jobs_finished_total",
                "counter",
                "Jobs that reached a final state here.",
                self.jobs_finished.get(),
            ),
            (
                "outpost_outcome_batches_split_total",
                "counter",
                "Starts and outcomes recorded together whose shared commit failed (a lock conflict, a refused value) and were recorded one by one.",
                self.outcome_batches_split.get(),
            ),
            (
                "outpost_agents_connected",
                "gauge",
                "Agents with a live session on this controller.",
                self.agents_connected.get(),
            ),
            (
                "outpost_handshakes_refused_total",
                "counter",
                "Agent sessions refused (revoked, unknown, version).",
                self.handshakes_refused.get(),
            ),
            (
                "outpost_revision_bytes_served_total",
                "counter",
                "Bytes of project revisions sent to agents (a cached revision costs none).",
                self.revision_bytes_served.get(),
            ),
        ];
        let mut out = String::new();
        let mut row = |name: &str, kind: &str, help: &str, value: &dyn std::fmt::Display| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            ));
        };
        for (name, kind, help, value) in rows {
            row(name, kind, help, &value);
        }
        if self.replica.load(Ordering::Relaxed) {
            row(
                "outpost_replica_lag_seconds",
                "gauge",
                "Seconds the read replica is behind the primary (-1: unknown, the replica is down or not replicating).",
                &self.replica_lag_seconds.get(),
            );
            row(
                "outpost_replica_in_use",
                "gauge",
                "1 while pages read from the read replica, 0 while it is bypassed.",
                &self.replica_in_use.get(),
            );
            row(
                "outpost_replica_reads_total",
                "counter",
                "Reads the read replica answered.",
                &self.replica_reads.get(),
            );
            row(
                "outpost_replica_fallback_reads_total",
                "counter",
                "Reads meant for the read replica that the primary answered (replica bypassed or failing).",
                &self.replica_fallback_reads.get(),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.lines_ingested.add(42);
        m.agents_connected.set(3);
        let text = m.render();
        assert!(text.contains("# TYPE outpost_log_lines_ingested_total counter\noutpost_log_lines_ingested_total 42\n"), "{text}");
        assert!(
            text.contains("# TYPE outpost_agents_connected gauge\noutpost_agents_connected 3\n"),
            "{text}"
        );
        assert_eq!(text.lines().filter(|l| !l.starts_with('#')).count(), 10);
        // The replica's rows appear once one is configured; its lag is unknown until looked at.
        m.replica_configured();
        let text = m.render();
        assert!(
            text.contains("\noutpost_replica_lag_seconds -1\n")
                && text.contains("\noutpost_replica_in_use 0\n"),
            "{text}"
        );
        assert_eq!(text.lines().filter(|l| !l.starts_with('#')).count(), 14);
    }
}
