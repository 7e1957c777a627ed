//! The controller's commands, one module each, and what they share: where the settings' flags
//! go, how the settings resolve, and how a command opens the store.

pub mod agents;
pub mod archive;
pub mod backup;
pub mod bundle;
pub mod credentials;
pub mod dev;
pub mod init;
pub mod migrate;
pub mod partitions;
pub mod revoke;
pub mod serve;
pub mod token;

use std::path::Path;

use anyhow::Context;
use clap::{Arg, Args as _};
use outpost_controller::config::{Config, Settings};
use outpost_controller::Store;

/// The daemon's settings that another command takes too: `bundle` packs the agent binary,
/// `archive` does the retention's archive work.
const ALSO_TAKEN: &[(&str, &str)] = &[
    ("bundle", "agent_binary"),
    ("archive", "retention_days"),
    ("archive", "archive_url"),
    ("archive", "archive_s3_endpoint"),
    ("archive", "archive_s3_region"),
    ("archive", "archive_s3_access_key_id"),
    ("archive", "archive_s3_secret_access_key_file"),
    ("archive", "audit_retention_days"),
];

/// Adds the settings' flags to `cmd`: a `global` one to every command (before or after its
/// name), the daemon's to `serve` (and as [`ALSO_TAKEN`]). Elsewhere a daemon flag is hidden,
/// reads no environment and is refused with a message that says where it belongs, so that
/// every command's flags resolve through the one [`Config`].
pub fn with_settings(mut cmd: clap::Command) -> clap::Command {
    let settings = Config::augment_args(clap::Command::new("settings"));
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    for arg in settings.get_arguments() {
        if arg.is_global_set() {
            cmd = cmd.arg(arg.clone());
            continue;
        }
        let id = arg.get_id().as_str();
        for name in &names {
            cmd = cmd.mut_subcommand(name, |sc| {
                // A command's own flag of that name (dev's --api-listen) stays its own.
                if sc.get_arguments().any(|a| a.get_id() == id) {
                    sc
                } else if name == "serve" || ALSO_TAKEN.contains(&(name.as_str(), id)) {
                    sc.arg(arg.clone())
                } else {
                    sc.arg(refused(arg, name))
                }
            });
        }
    }
    cmd
}

/// `arg` on a command it does not apply to.
fn refused(arg: &Arg, command: &str) -> Arg {
    let message = format!(
        "--{} is a setting of `serve`, not of `{command}`",
        arg.get_long().unwrap_or_else(|| arg.get_id().as_str())
    );
    arg.clone()
        .hide(true)
        .env(None)
        .value_parser(move |_: &str| -> Result<String, String> { Err(message.clone()) })
}

/// The settings: defaults, then the configuration file, then the environment and flags.
pub fn settings(file: Option<&Path>, flags: &Config) -> anyhow::Result<Settings> {
    let file = match file {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    Ok(Settings::resolve(&[&file, flags])?)
}

/// Opens the store the settings name (making the data directory for SQLite).
pub async fn store(s: &Settings) -> anyhow::Result<Store> {
    if s.database_url.starts_with("sqlite:") {
        std::fs::create_dir_all(&s.data_dir).with_context(|| {
            format!("cannot create the data directory {}", s.data_dir.display())
        })?;
    }
    Ok(Store::connect(&s.database_url, &s.pool).await?)
}
