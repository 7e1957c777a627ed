//! `outpost-controller archive`: the retention's archive work on demand. `run` archives the
//! output of every finished job past `retention_days` and then removes the rows of archived
//! jobs (what the daemon does at start-up and hourly); `audit` exports a range of audit
//! records. Both write to `archive_url` and verify what they wrote before recording it.

use outpost_controller::archive::{audit, jobs, Archive};
use outpost_controller::config::Settings;
use outpost_controller::model::JobId;
use outpost_controller::retention;
use tokio_util::sync::CancellationToken;

// The action is a value, not a subcommand, so that the settings' flags (attached to
// `archive`) go anywhere on the line: `archive run --archive-url s3://...`.
#[derive(clap::Args)]
pub struct Args {
    /// What to do.
    action: Action,
    /// `audit`: the first audit record id to export.
    #[arg(long, required_if_eq("action", "audit"))]
    first: Option<i64>,
    /// `audit`: the last audit record id to export.
    #[arg(long, required_if_eq("action", "audit"))]
    last: Option<i64>,
    /// `audit`: a name for the export (e.g. the month it covers).
    #[arg(long, default_value = "manual")]
    label: String,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Action {
    /// Archive the output of finished jobs past the retention, then remove their rows; exits
    /// non-zero if a job could not be archived (its lines stay; a ticket says why).
    Run,
    /// Read every job archive back and check its line count and SHA-256 against its record;
    /// exits non-zero if any is missing or corrupted.
    Verify,
    /// Export the audit records with ids --first..=--last to the archive (they stay in the
    /// database).
    Audit,
}

pub async fn run(settings: &Settings, args: &Args) -> anyhow::Result<()> {
    let store = super::store(settings).await?;
    let archive = Archive::new(&settings.archive)?;
    let result = match &args.action {
        Action::Run => run_pass(&store, settings, archive).await,
        Action::Verify => verify_all(&store, &archive).await,
        Action::Audit => {
            let (Some(first), Some(last)) = (args.first, args.last) else {
                anyhow::bail!("archive audit needs --first and --last");
            };
            let a = audit::export_audit_range(&store, &archive, first, last, &args.label).await?;
            println!(
                "exported {} audit records ({}..={}) to {}/{} ({} bytes, sha256 {})",
                a.row_count,
                a.first_id,
                a.last_id,
                archive.url(),
                a.location,
                a.bytes,
                a.sha256
            );
            Ok(())
        }
    };
    store.close().await;
    result
}

async fn run_pass(
    store: &outpost_controller::Store,
    settings: &Settings,
    archive: Archive,
) -> anyhow::Result<()> {
    let policy = retention::Policy {
        retention: settings.retention,
        audit_retention: settings.audit_retention,
        archive,
    };
    let stop = CancellationToken::new();
    let pass = retention::archive_pass(store, &policy, &stop).await?;
    let removed = retention::removal_pass(store, &policy, &stop).await?;
    println!(
        "archived {} job(s) to {}, {} failed; removed {removed} archived line(s)",
        pass.archived,
        policy.archive.url(),
        pass.failed
    );
    if pass.failed > 0 {
        anyhow::bail!(
            "{} job(s) could not be archived and keep their lines; their tickets say why",
            pass.failed
        );
    }
    Ok(())
}

async fn verify_all(store: &outpost_controller::Store, archive: &Archive) -> anyhow::Result<()> {
    let (mut after, mut good, mut bad) = (JobId(0), 0u64, 0u64);
    loop {
        let batch = store.log_archives(after, 100).await?;
        let Some(last) = batch.last().map(|a| a.job_id) else {
            break;
        };
        for a in &batch {
            match jobs::verify_job_archive(archive, a).await {
                Ok(()) => good += 1,
                Err(e) => {
                    bad += 1;
                    println!("job {} ({}): {e}", a.job_id, a.location);
                }
            }
        }
        after = last;
    }
    println!("{good} archive(s) verified, {bad} bad");
    if bad > 0 {
        anyhow::bail!("{bad} archive(s) failed verification");
    }
    Ok(())
}
