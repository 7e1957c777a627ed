//! `outpost-controller migrate`: applies the embedded schema migrations, or rolls the newest
//! back, and says which ran. On MySQL a database that already holds data is backed up first:
//! MySQL cannot roll back DDL, so a migration that fails halfway is undone from that backup.

use std::path::PathBuf;

use outpost_controller::config::Settings;

#[derive(clap::Args)]
pub struct Args {
    /// Roll back the newest N applied migrations instead.
    #[arg(long, value_name = "N")]
    down: Option<usize>,
    /// Skip the backup taken before migrating a MySQL database that already has a schema.
    #[arg(long, conflicts_with = "backup_to")]
    no_backup: bool,
    /// Where that backup goes (default: DATA_DIR/backups/pre-migrate-<time>).
    #[arg(long, value_name = "DIR")]
    backup_to: Option<PathBuf>,
}

pub async fn run(settings: &Settings, args: &Args) -> anyhow::Result<()> {
    let store = super::store(settings).await?;
    let result = migrate(&store, settings, args).await;
    store.close().await;
    result
}

async fn migrate(
    store: &outpost_controller::Store,
    settings: &Settings,
    args: &Args,
) -> anyhow::Result<()> {
    if let Some(n) = args.down {
        let undone = store.migrate_down(n).await?;
        for m in &undone {
            println!("rolled back {:04} {}", m.version, m.description);
        }
        println!("{} migration(s) rolled back", undone.len());
        return Ok(());
    }
    let pending = store.pending_migrations().await?;
    let has_schema = !store.applied_migrations().await?.is_empty();
    let mysql = !settings.database_url.starts_with("sqlite:");
    if mysql && has_schema && !pending.is_empty() && !args.no_backup {
        let to = args.backup_to.clone().unwrap_or_else(|| {
            settings.data_dir.join("backups").join(format!(
                "pre-migrate-{}",
                chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
            ))
        });
        super::backup::take(store, settings, &to)
            .await
            .map_err(|e| {
                e.context("nothing was migrated (pass --no-backup to migrate without one)")
            })?;
        println!("backed up to {} before migrating", to.display());
    }
    let ran = store.migrate_up().await?;
    for m in &ran {
        println!("applied {:04} {}", m.version, m.description);
    }
    if ran.is_empty() {
        println!(
            "schema is up to date ({} migrations applied)",
            store.known_migrations()
        );
    } else {
        println!("{} migration(s) applied", ran.len());
    }
    Ok(())
}
