//! `outpost-controller archive`: the retention's archive work on demand. `run` archives the
//! output of every finished job past `retention_days` and then removes the rows of archived
//! jobs (what the daemon does at start-up and hourly); `audit` exports a range of audit
//! records. Both write to `archive_url` and verify what they wrote before recording it.

use outpost_controller::archive::{audit, Archive};
use outpost_controller::config::Settings;
use outpost_controller::retention;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Archive the output of finished jobs past the retention, then remove their rows; exits
    /// non-zero if a job could not be archived (its lines stay; a ticket says why).
    Run,
    /// Export the audit records with ids FIRST..=LAST to the archive (they stay in the
    /// database).
    Audit {
        #[arg(long)]
        first: i64,
        #[arg(long)]
        last: i64,
        /// A name for the export (e.g. the month it covers).
        #[arg(long, default_value = "manual")]
        label: String,
    },
}

pub async fn run(settings: &Settings, args: &Args) -> anyhow::Result<()> {
    let store = super::store(settings).await?;
    let archive = Archive::new(&settings.archive)?;
    let result = match &args.action {
        Action::Run => run_pass(&store, settings, archive).await,
        Action::Audit { first, last, label } => {
            let a = audit::export_audit_range(&store, &archive, *first, *last, label).await?;
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
    let removed = retention::removal_pass(store, &stop).await?;
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
