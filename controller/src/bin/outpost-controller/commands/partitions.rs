//! `outpost-controller partitions`: job_logs and audit_logs in monthly partitions on
//! MySQL/MariaDB — see where they stand, measure how long partitioning would take, do it, or
//! undo it.

use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use outpost_controller::config::Settings;
use outpost_controller::partitioner::AHEAD;
use outpost_controller::store::partitions::TableLayout;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Each table's partitions (month, estimated rows, size), or that it is not partitioned.
    Status,
    /// Time a copy of a sample of job_logs and say how long `enable` would take here.
    Estimate {
        /// Rows of job_logs to copy for the measurement.
        #[arg(long, default_value_t = 200_000)]
        sample: u64,
    },
    /// Partition both tables by month (this month and two ahead; the controller keeps adding
    /// months). This copies both tables, during which their writes wait: stop every controller
    /// first (agents keep their output in their spools meanwhile). Prints the estimate, then
    /// does it only with --yes.
    Enable {
        /// Go ahead (without it, only the estimate is printed).
        #[arg(long)]
        yes: bool,
        /// Rows of job_logs to copy for the estimate.
        #[arg(long, default_value_t = 200_000)]
        sample: u64,
    },
    /// Undo `enable`: one partition per table again, with the foreign keys back. Copies both
    /// tables too; stop every controller first. Only with --yes.
    Disable {
        #[arg(long)]
        yes: bool,
    },
}

pub async fn run(settings: &Settings, args: &Args) -> anyhow::Result<()> {
    let store = super::store(settings).await?;
    let result = act(&store, &args.action).await;
    store.close().await;
    result
}

async fn act(store: &outpost_controller::Store, action: &Action) -> anyhow::Result<()> {
    match action {
        Action::Status => {
            for t in store.partition_layout().await? {
                print_layout(&t);
            }
        }
        Action::Estimate { sample } => {
            estimate(store, *sample).await?;
        }
        Action::Enable { yes, sample } => {
            let took = estimate(store, *sample).await?;
            if !yes {
                println!("nothing changed: run again with --yes to partition (stop every controller first)");
                return Ok(());
            }
            let started = std::time::Instant::now();
            store
                .enable_partitions(Utc::now(), AHEAD, |step| {
                    println!("[{:>6.1}s] {step}", started.elapsed().as_secs_f64())
                })
                .await
                .context("partitioning failed")?;
            println!(
                "partitioned in {} (estimated {}); start the controllers again",
                human(started.elapsed()),
                human(took)
            );
            for t in store.partition_layout().await? {
                print_layout(&t);
            }
        }
        Action::Disable { yes } => {
            if !yes {
                println!("this copies job_logs and audit_logs back into one partition each: stop every controller, then run again with --yes");
                return Ok(());
            }
            let started = std::time::Instant::now();
            store
                .disable_partitions(|step| {
                    println!("[{:>6.1}s] {step}", started.elapsed().as_secs_f64())
                })
                .await
                .context("removing the partitions failed")?;
            println!(
                "one partition per table again, in {}",
                human(started.elapsed())
            );
        }
    }
    Ok(())
}

async fn estimate(store: &outpost_controller::Store, sample: u64) -> anyhow::Result<Duration> {
    let e = store.estimate_enable(sample).await?;
    if e.tables.iter().all(|t| t.is_partitioned()) {
        anyhow::bail!("job_logs and audit_logs are partitioned already (outpost-controller partitions status)");
    }
    for t in &e.tables {
        if t.is_partitioned() {
            println!(
                "{}: partitioned already (an earlier run stopped after it)",
                t.table.name()
            );
            continue;
        }
        println!(
            "{}: about {} rows, {}",
            t.table.name(),
            t.rows_estimate,
            bytes(t.bytes)
        );
    }
    println!(
        "copied {} rows of job_logs in {:.2} s; partitioning both tables should take about {}",
        e.sample_rows,
        e.sample_took.as_secs_f64(),
        human(e.estimate)
    );
    Ok(e.estimate)
}

fn print_layout(t: &TableLayout) {
    if !t.is_partitioned() {
        println!(
            "{}: not partitioned (about {} rows, {}); `outpost-controller partitions estimate` says how long partitioning would take",
            t.table.name(),
            t.rows_estimate,
            bytes(t.bytes)
        );
        return;
    }
    println!("{}: {} partitions", t.table.name(), t.partitions.len());
    for p in &t.partitions {
        let what = match p.month {
            Some(m) => m.to_string(),
            None => p.name.clone(),
        };
        println!(
            "  {what:<10} ~{:>12} rows {:>10}",
            p.rows_estimate,
            bytes(p.bytes)
        );
    }
}

fn bytes(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b => format!("{} KiB", b / 1024),
    }
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{:.1} s", d.as_secs_f64()),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}
