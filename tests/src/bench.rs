//! What the benchmarks share: their knobs from the environment, percentiles, and waiting for a
//! job by its uuid with a short poll (the figures are timings, so the poll is fine-grained).

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use outpost_controller::model::Job;

use crate::world::World;

/// `name` from the environment as a number, or `default`.
pub fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Whether `section` is wanted: every section unless `OUTPOST_BENCH` lists some.
pub fn wanted(section: &str) -> bool {
    std::env::var("OUTPOST_BENCH")
        .map(|v| v.split(',').any(|s| s.trim() == section))
        .unwrap_or(true)
}

/// The p-th percentile (0–100) of `v`, nearest rank.
pub fn pct(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// Nanoseconds since the Unix epoch (comparable across processes).
pub fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// The job `uuid` once it has ended, polled every `poll`.
pub async fn wait_final(w: &World, uuid: &str, poll: Duration) -> Job {
    loop {
        if let Ok(j) = w
            .store
            .get_job_by_uuid(uuid.parse().expect("a job uuid"))
            .await
        {
            if j.status.is_final() {
                return j;
            }
        }
        tokio::time::sleep(poll).await;
    }
}

/// `name` found on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.exists())
    })
}

/// A process's resident memory in KiB (`VmRSS` of /proc/PID/status), 0 if unreadable.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}
