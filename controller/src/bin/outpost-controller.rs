//! `outpost-controller`: the Outpost controller daemon and its maintenance commands.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use outpost_controller::{PoolConfig, Store};

/// The Outpost controller: owns the state, schedules Ansible jobs on agents, ingests their output.
///
/// The database is chosen by URL: `mysql://user:pass@host:3306/outpost` (or `mariadb://`) for
/// production and several controllers; `sqlite://PATH` for one controller. Without a URL the
/// embedded SQLite store `<data-dir>/outpost.db` is used.
#[derive(Parser)]
#[command(name = "outpost-controller", version)]
struct Cli {
    /// Database URL; defaults to SQLite in the data directory.
    #[arg(
        long,
        env = "OUTPOST_DATABASE_URL",
        global = true,
        hide_env_values = true
    )]
    database_url: Option<String>,
    /// Where the embedded store, the PKI and playbook files live.
    #[arg(
        long,
        env = "OUTPOST_DATA_DIR",
        global = true,
        default_value = "/var/lib/outpost"
    )]
    data_dir: PathBuf,
    /// Maximum pooled connections (MySQL: the seed's 20, plus --db-pool-overflow).
    #[arg(
        long,
        env = "OUTPOST_DB_POOL_SIZE",
        global = true,
        default_value_t = 20
    )]
    db_pool_size: u32,
    /// Extra connections allowed above the pool size under load.
    #[arg(
        long,
        env = "OUTPOST_DB_POOL_OVERFLOW",
        global = true,
        default_value_t = 10
    )]
    db_pool_overflow: u32,
    /// Seconds to wait for a free connection before failing.
    #[arg(
        long,
        env = "OUTPOST_DB_POOL_TIMEOUT",
        global = true,
        default_value_t = 30
    )]
    db_pool_timeout: u64,
    /// Seconds after which a connection is closed and replaced.
    #[arg(
        long,
        env = "OUTPOST_DB_POOL_RECYCLE",
        global = true,
        default_value_t = 3600
    )]
    db_pool_recycle: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply the embedded schema migrations (or roll back with --down N) and say which ran.
    Migrate {
        /// Roll back the newest N applied migrations instead.
        #[arg(long, value_name = "N")]
        down: Option<usize>,
    },
    /// Run the controller daemon: QUIC for agents (UDP 7443) and the HTTPS API (TCP 8443).
    /// Arriving with the controller issue; today it only applies migrations and exits.
    Serve,
    /// Create the CA, the controller's certificate and the first admin. Arriving with the PKI.
    Init,
    /// One-command local setup on SQLite: fresh PKI, one local agent, localhost as a server,
    /// a playbook run end to end. Arriving once controller and agent are in place.
    Dev,
}

impl Cli {
    fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("outpost.db").display()))
    }

    fn pool(&self) -> PoolConfig {
        PoolConfig {
            size: self.db_pool_size,
            overflow: self.db_pool_overflow,
            acquire_timeout: std::time::Duration::from_secs(self.db_pool_timeout),
            recycle: std::time::Duration::from_secs(self.db_pool_recycle),
        }
    }

    async fn store(&self) -> anyhow::Result<Store> {
        let url = self.database_url();
        if url.starts_with("sqlite:") && self.database_url.is_none() {
            std::fs::create_dir_all(&self.data_dir).with_context(|| {
                format!(
                    "cannot create the data directory {}",
                    self.data_dir.display()
                )
            })?;
        }
        Ok(Store::connect(&url, &self.pool()).await?)
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Migrate { down } => {
            let store = cli.store().await?;
            match down {
                Some(n) => {
                    let undone = store.migrate_down(*n).await?;
                    for m in &undone {
                        println!("rolled back {:04} {}", m.version, m.description);
                    }
                    println!("{} migration(s) rolled back", undone.len());
                }
                None => {
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
                }
            }
            store.close().await;
            Ok(())
        }
        Command::Serve => {
            let store = cli.store().await?;
            let ran = store.migrate_up().await?;
            println!(
                "{} migration(s) applied; the daemon itself arrives with the controller issue",
                ran.len()
            );
            store.close().await;
            Ok(())
        }
        Command::Init | Command::Dev => {
            anyhow::bail!("not built yet: this command arrives with the PKI and controller issues")
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
