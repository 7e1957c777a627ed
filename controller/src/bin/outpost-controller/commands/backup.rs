//! `outpost-controller backup` and `restore`: a consistent copy of the database with the PKI
//! and the credentials key, and its restore into an empty database.

use std::path::{Path, PathBuf};

use anyhow::Context;
use outpost_controller::backup::{self, Manifest};
use outpost_controller::config::Settings;

#[derive(clap::Args)]
pub struct BackupArgs {
    /// A new (or empty) directory for the backup; made 0700, its files 0600. It holds the
    /// credentials key and the CA key: keep it as safe as the controller's data directory.
    #[arg(long, value_name = "DIR")]
    to: PathBuf,
}

#[derive(clap::Args)]
pub struct RestoreArgs {
    /// A directory written by `outpost-controller backup`.
    #[arg(long, value_name = "DIR")]
    from: PathBuf,
}

pub async fn run_backup(settings: &Settings, args: &BackupArgs) -> anyhow::Result<()> {
    let store = super::store(settings).await?;
    let made = take(&store, settings, &args.to).await;
    store.close().await;
    let manifest = made?;
    println!("backup written to {}", args.to.display());
    print_contents(&manifest);
    Ok(())
}

/// Takes a backup into `to` (used by `migrate` too).
pub async fn take(
    store: &outpost_controller::Store,
    settings: &Settings,
    to: &Path,
) -> anyhow::Result<Manifest> {
    backup::backup(store, &settings.database_url, &settings.data_dir, to)
        .await
        .with_context(|| format!("backup into {} failed", to.display()))
}

pub async fn run_restore(settings: &Settings, args: &RestoreArgs) -> anyhow::Result<()> {
    let restored = backup::restore(
        &settings.database_url,
        &settings.pool,
        &settings.data_dir,
        &args.from,
    )
    .await
    .with_context(|| format!("restore from {} failed", args.from.display()))?;
    let m = &restored.manifest;
    println!(
        "restored the backup of {} ({} migrations) and {} PKI file(s)",
        m.created_at.to_rfc3339(),
        m.migrations.len(),
        restored.pki_written
    );
    let c = restored.census;
    println!(
        "now: {} users, {} agents, {} servers, {} jobs, {} log lines, {} audit records",
        c.users, c.agents, c.servers, c.jobs, c.job_logs, c.audit_logs
    );
    if c != m.census {
        println!(
            "note: the counts differ from those taken as the backup began (the controller was writing meanwhile): {} jobs, {} log lines then",
            m.census.jobs, m.census.job_logs
        );
    }
    Ok(())
}

fn print_contents(m: &Manifest) {
    let c = m.census;
    println!(
        "  {} database, {} migrations; {} users, {} agents, {} servers, {} jobs, {} log lines, {} audit records",
        m.backend,
        m.migrations.len(),
        c.users,
        c.agents,
        c.servers,
        c.jobs,
        c.job_logs,
        c.audit_logs
    );
    for (name, f) in &m.files {
        println!("  {name}  {} bytes  sha256 {}", f.bytes, f.sha256);
    }
}
