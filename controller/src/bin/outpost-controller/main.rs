//! `outpost-controller`: the Outpost controller daemon and its maintenance commands. This is the
//! command line and the dispatch; each command is a module of [`commands`], and the settings
//! are declared once, in [`Config`].

mod commands;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use commands::{
    agents, archive, backup, bundle, credentials, dev, init, migrate, partitions, revoke, serve,
    token,
};
use outpost_controller::config::Config;

/// The Outpost controller: owns the state, schedules Ansible jobs on agents, ingests their output.
///
/// The database is chosen by URL: `mysql://user:pass@host:3306/outpost` (or `mariadb://`) for
/// production and several controllers; `sqlite://PATH` for one controller. Without a URL the
/// embedded SQLite store `<data-dir>/outpost.db` is used.
///
/// Settings come from a TOML file (--config), then OUTPOST_* environment variables, then flags;
/// each overrides the one before.
// The settings' flags are added by `commands::with_settings`.
#[derive(Parser)]
#[command(name = "outpost-controller", version)]
struct Cli {
    /// A TOML configuration file (keys as in the README, e.g. `retention_days = 30`).
    #[arg(long, env = "OUTPOST_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply the embedded schema migrations (or roll back with --down N) and say which ran.
    Migrate(migrate::Args),
    /// Run the controller: QUIC for agents (UDP 7443) and enrolment (UDP 7444), and the
    /// HTTPS API (TCP 8443).
    Serve(serve::Args),
    /// Create the CA, the controller's certificate and the first admin account.
    Init(init::Args),
    /// Make a one-time enrolment token for a new agent (prints it once; only its hash is kept).
    Token(token::Args),
    /// Make an install bundle for one new agent: a tar.gz with the agent binary, its systemd
    /// unit, a one-time enrolment token (0600) and install.yml, a playbook that installs the
    /// agent on the bastion over SSH, enrols it, starts it and waits until it is online:
    /// `tar xzf outpost-agent-NAME.tar.gz && cd outpost-agent-NAME &&
    /// ansible-playbook -i BASTION, install.yml`.
    Bundle(bundle::Args),
    /// List enrolled agents.
    Agents,
    /// Revoke an agent: its sessions are dropped and it can never connect again.
    Revoke(revoke::Args),
    /// Write a backup: a consistent copy of the database (mariadb-dump --single-transaction on
    /// MySQL, VACUUM INTO on SQLite), the PKI directory with the credentials key, and a
    /// manifest of checksums and row counts. Safe while the controller runs.
    Backup(backup::BackupArgs),
    /// Restore a backup into an empty database and the PKI directory, after checking every
    /// checksum; refuses to overwrite tables or PKI files that differ.
    Restore(backup::RestoreArgs),
    /// The key that seals credentials at rest (`credentials.key` in the PKI directory): check
    /// it against the stored credentials, or rotate it.
    Credentials(credentials::Args),
    /// job_logs and audit_logs in monthly partitions (MySQL/MariaDB): status, estimate,
    /// enable, disable. Retention then drops whole archived months instead of deleting rows.
    Partitions(partitions::Args),
    /// Archive now: the output of finished jobs past the retention (then their rows go), or a
    /// range of audit records; to `archive_url`, verified before anything is recorded.
    Archive(archive::Args),
    /// A local controller that stays up until Ctrl-C: SQLite, its own PKI, one local agent,
    /// localhost as a server, the example playbook run once and followed live; then the API
    /// address, the admin password and the `outpost login` command.
    Dev(dev::Args),
}

/// The command line, and the settings it gives (flags and environment).
fn parse(
    argv: impl IntoIterator<Item = impl Into<OsString> + Clone>,
) -> clap::error::Result<(Cli, Config)> {
    let matches = commands::with_settings(Cli::command()).try_get_matches_from(argv)?;
    let cli = Cli::from_arg_matches(&matches)?;
    // Every command has every setting's id (a refused one where it does not apply).
    let flags = match matches.subcommand() {
        Some((_, sub)) => Config::from_arg_matches(sub)?,
        None => Config::default(),
    };
    Ok((cli, flags))
}

async fn run(cli: Cli, flags: Config) -> anyhow::Result<()> {
    let settings = || commands::settings(cli.config.as_deref(), &flags);
    match &cli.command {
        Command::Migrate(args) => migrate::run(&settings()?, args).await,
        Command::Serve(args) => serve::run(settings()?, args).await,
        Command::Init(args) => init::run(&settings()?, args).await,
        Command::Token(args) => token::run(&settings()?, args).await,
        Command::Bundle(args) => bundle::run(&settings()?, args).await,
        Command::Agents => agents::run(&settings()?).await,
        Command::Revoke(args) => revoke::run(&settings()?, args).await,
        Command::Backup(args) => backup::run_backup(&settings()?, args).await,
        Command::Restore(args) => backup::run_restore(&settings()?, args).await,
        Command::Credentials(args) => credentials::run(&settings()?, args).await,
        Command::Partitions(args) => partitions::run(&settings()?, args).await,
        Command::Archive(args) => archive::run(&settings()?, args).await,
        // The quick start makes its own settings in its own directory.
        Command::Dev(args) => dev::run(args).await,
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let (cli, flags) = match parse(std::env::args_os()) {
        Ok(parsed) => parsed,
        Err(e) => e.exit(),
    };
    match run(cli, flags).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    //! Pins every setting's flag, environment variable and file key (users' unit files and
    //! configurations name them), and the order in which they override each other.

    use std::path::Path;
    use std::sync::Mutex;
    use std::time::Duration;

    use outpost_controller::config::{LogFormat, Settings};

    use super::*;

    /// The environment is the process's: tests that parse take turns and start from none.
    static ENV: Mutex<()> = Mutex::new(());

    fn clean_env() -> std::sync::MutexGuard<'static, ()> {
        let guard = ENV.lock().unwrap_or_else(|e| e.into_inner());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("OUTPOST_") {
                std::env::remove_var(k);
            }
        }
        guard
    }

    /// What `main` resolves for this command line.
    fn resolve(argv: &[&str]) -> anyhow::Result<Settings> {
        let (cli, flags) =
            parse(std::iter::once("outpost-controller").chain(argv.iter().copied()))?;
        commands::settings(cli.config.as_deref(), &flags)
    }

    fn write_config(dir: &Path, text: &str) -> String {
        let path = dir.join("controller.toml");
        std::fs::write(&path, text).expect("write the configuration");
        path.display().to_string()
    }

    /// One setting: its file key, flag and environment variable, and a value in each form.
    struct Pin {
        key: &'static str,
        flag: &'static str,
        env: &'static str,
        /// The flag's value; empty for a flag that takes none.
        arg: &'static str,
        /// The environment's value.
        var: &'static str,
        /// The file's value (TOML).
        toml: &'static str,
    }

    struct Case {
        pins: &'static [Pin],
        /// Whether every command takes it (else `serve` alone).
        every_command: bool,
        /// Whether the resolved settings hold the value (never the default).
        holds: fn(&Settings) -> bool,
    }

    const fn pin(
        key: &'static str,
        flag: &'static str,
        env: &'static str,
        arg: &'static str,
        toml: &'static str,
    ) -> Pin {
        Pin {
            key,
            flag,
            env,
            arg,
            var: arg,
            toml,
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    const CASES: &[Case] = &[
        Case {
            pins: &[pin(
                "database_url",
                "--database-url",
                "OUTPOST_DATABASE_URL",
                "sqlite:///tmp/pin.db",
                "\"sqlite:///tmp/pin.db\"",
            )],
            every_command: true,
            holds: |s| s.database_url == "sqlite:///tmp/pin.db",
        },
        Case {
            pins: &[pin(
                "data_dir",
                "--data-dir",
                "OUTPOST_DATA_DIR",
                "/srv/pin",
                "\"/srv/pin\"",
            )],
            every_command: true,
            holds: |s| {
                s.data_dir == Path::new("/srv/pin")
                    && s.database_url == "sqlite:///srv/pin/outpost.db"
            },
        },
        Case {
            pins: &[pin(
                "db_pool_size",
                "--db-pool-size",
                "OUTPOST_DB_POOL_SIZE",
                "7",
                "7",
            )],
            every_command: true,
            holds: |s| s.pool.size == 7,
        },
        Case {
            pins: &[pin(
                "db_pool_overflow",
                "--db-pool-overflow",
                "OUTPOST_DB_POOL_OVERFLOW",
                "8",
                "8",
            )],
            every_command: true,
            holds: |s| s.pool.overflow == 8,
        },
        Case {
            pins: &[pin(
                "db_pool_timeout_secs",
                "--db-pool-timeout",
                "OUTPOST_DB_POOL_TIMEOUT",
                "9",
                "9",
            )],
            every_command: true,
            holds: |s| s.pool.acquire_timeout == secs(9),
        },
        Case {
            pins: &[pin(
                "db_pool_recycle_secs",
                "--db-pool-recycle",
                "OUTPOST_DB_POOL_RECYCLE",
                "11",
                "11",
            )],
            every_command: true,
            holds: |s| s.pool.recycle == secs(11),
        },
        Case {
            pins: &[pin(
                "log_format",
                "--log-format",
                "OUTPOST_LOG_FORMAT",
                "json",
                "\"json\"",
            )],
            every_command: true,
            holds: |s| s.log_format == LogFormat::Json,
        },
        Case {
            // A replica needs a MySQL/MariaDB primary: both given.
            pins: &[
                pin(
                    "database_url",
                    "--database-url",
                    "OUTPOST_DATABASE_URL",
                    "mysql://root@primary:3306/outpost",
                    "\"mysql://root@primary:3306/outpost\"",
                ),
                pin(
                    "read_database_url",
                    "--read-database-url",
                    "OUTPOST_READ_DATABASE_URL",
                    "mysql://reader@replica:3306/outpost",
                    "\"mysql://reader@replica:3306/outpost\"",
                ),
            ],
            every_command: false,
            holds: |s| {
                s.read_database_url.as_deref() == Some("mysql://reader@replica:3306/outpost")
            },
        },
        Case {
            pins: &[pin(
                "read_replica_max_lag_secs",
                "--read-replica-max-lag-secs",
                "OUTPOST_READ_REPLICA_MAX_LAG_SECS",
                "12",
                "12",
            )],
            every_command: false,
            holds: |s| s.read_replica_max_lag == secs(12),
        },
        Case {
            pins: &[pin(
                "listen",
                "--listen",
                "OUTPOST_LISTEN",
                "127.0.0.1:9001",
                "\"127.0.0.1:9001\"",
            )],
            every_command: false,
            holds: |s| s.listen.to_string() == "127.0.0.1:9001",
        },
        Case {
            pins: &[
                pin(
                    "archive_url",
                    "--archive-url",
                    "OUTPOST_ARCHIVE_URL",
                    "s3://logs/outpost",
                    "\"s3://logs/outpost\"",
                ),
                pin(
                    "archive_s3_endpoint",
                    "--archive-s3-endpoint",
                    "OUTPOST_ARCHIVE_S3_ENDPOINT",
                    "http://127.0.0.1:9000",
                    "\"http://127.0.0.1:9000\"",
                ),
                pin(
                    "archive_s3_region",
                    "--archive-s3-region",
                    "OUTPOST_ARCHIVE_S3_REGION",
                    "eu-west-1",
                    "\"eu-west-1\"",
                ),
                pin(
                    "archive_s3_access_key_id",
                    "--archive-s3-access-key-id",
                    "OUTPOST_ARCHIVE_S3_ACCESS_KEY_ID",
                    "AKIA1",
                    "\"AKIA1\"",
                ),
                pin(
                    "archive_s3_secret_access_key_file",
                    "--archive-s3-secret-access-key-file",
                    "OUTPOST_ARCHIVE_S3_SECRET_ACCESS_KEY_FILE",
                    "/etc/outpost/s3.key",
                    "\"/etc/outpost/s3.key\"",
                ),
            ],
            every_command: false,
            holds: |s| {
                let a = &s.archive;
                a.url == "s3://logs/outpost"
                    && a.s3_endpoint.as_deref() == Some("http://127.0.0.1:9000")
                    && a.s3_region.as_deref() == Some("eu-west-1")
                    && a.s3_access_key_id.as_deref() == Some("AKIA1")
                    && a.s3_secret_access_key_file.as_deref()
                        == Some(Path::new("/etc/outpost/s3.key"))
            },
        },
        Case {
            pins: &[pin(
                "audit_retention_days",
                "--audit-retention-days",
                "OUTPOST_AUDIT_RETENTION_DAYS",
                "400",
                "400",
            )],
            every_command: false,
            holds: |s| s.audit_retention == Some(secs(400 * 86400)),
        },
        Case {
            pins: &[pin(
                "enroll_listen",
                "--enroll-listen",
                "OUTPOST_ENROLL_LISTEN",
                "127.0.0.1:9002",
                "\"127.0.0.1:9002\"",
            )],
            every_command: false,
            holds: |s| s.enroll_listen.to_string() == "127.0.0.1:9002",
        },
        Case {
            pins: &[pin(
                "controller_id",
                "--controller-id",
                "OUTPOST_CONTROLLER_ID",
                "pin-1",
                "\"pin-1\"",
            )],
            every_command: false,
            holds: |s| s.controller_id == "pin-1",
        },
        Case {
            pins: &[pin(
                "routing_keys",
                "--routing-key",
                "OUTPOST_ROUTING_KEYS",
                "dc,zone",
                "[\"dc\", \"zone\"]",
            )],
            every_command: false,
            holds: |s| s.routing_keys == ["dc", "zone"],
        },
        Case {
            pins: &[pin(
                "agent_grace_secs",
                "--agent-grace-secs",
                "OUTPOST_AGENT_GRACE_SECS",
                "45",
                "45",
            )],
            every_command: false,
            holds: |s| s.agent_grace == secs(45),
        },
        Case {
            pins: &[pin(
                "heartbeat_interval_secs",
                "--heartbeat-secs",
                "OUTPOST_HEARTBEAT_SECS",
                "3",
                "3",
            )],
            every_command: false,
            holds: |s| s.heartbeat_interval == secs(3),
        },
        Case {
            pins: &[pin(
                "agent_cert_days",
                "--agent-cert-days",
                "OUTPOST_AGENT_CERT_DAYS",
                "2",
                "2",
            )],
            every_command: false,
            holds: |s| s.agent_cert_lifetime == secs(2 * 86400),
        },
        Case {
            pins: &[pin(
                "retention_days",
                "--retention-days",
                "OUTPOST_RETENTION_DAYS",
                "30",
                "30",
            )],
            every_command: false,
            holds: |s| s.retention == secs(30 * 86400),
        },
        Case {
            pins: &[pin(
                "schedule_grace_secs",
                "--schedule-grace-secs",
                "OUTPOST_SCHEDULE_GRACE_SECS",
                "20",
                "20",
            )],
            every_command: false,
            holds: |s| s.schedule_grace == secs(20),
        },
        Case {
            pins: &[pin(
                "schedule_fire_concurrency",
                "--schedule-fire-concurrency",
                "OUTPOST_SCHEDULE_FIRE_CONCURRENCY",
                "3",
                "3",
            )],
            every_command: false,
            holds: |s| s.schedule_fire_concurrency == 3,
        },
        Case {
            pins: &[pin(
                "sweep_interval_ms",
                "--sweep-interval-ms",
                "OUTPOST_SWEEP_INTERVAL_MS",
                "700",
                "700",
            )],
            every_command: false,
            holds: |s| s.sweep_interval == Duration::from_millis(700),
        },
        Case {
            pins: &[pin(
                "max_running_per_server",
                "--max-running-per-server",
                "OUTPOST_MAX_RUNNING_PER_SERVER",
                "4",
                "4",
            )],
            every_command: false,
            holds: |s| s.max_running_per_server == 4,
        },
        Case {
            pins: &[pin(
                "default_time_limit_secs",
                "--job-time-limit-secs",
                "OUTPOST_JOB_TIME_LIMIT_SECS",
                "99",
                "99",
            )],
            every_command: false,
            holds: |s| s.default_time_limit == secs(99),
        },
        Case {
            pins: &[pin(
                "idle_timeout_ms",
                "--idle-timeout-ms",
                "OUTPOST_IDLE_TIMEOUT_MS",
                "2500",
                "2500",
            )],
            every_command: false,
            holds: |s| s.idle_timeout == Duration::from_millis(2500),
        },
        Case {
            pins: &[Pin {
                key: "migrate_on_start",
                flag: "--no-migrate",
                env: "OUTPOST_NO_MIGRATE",
                arg: "",
                var: "true",
                toml: "false",
            }],
            every_command: false,
            holds: |s| !s.migrate_on_start,
        },
        Case {
            pins: &[pin(
                "api_listen",
                "--api-listen",
                "OUTPOST_API_LISTEN",
                "127.0.0.1:9443",
                "\"127.0.0.1:9443\"",
            )],
            every_command: false,
            holds: |s| s.api_listen.to_string() == "127.0.0.1:9443",
        },
        Case {
            // Both or neither.
            pins: &[
                pin(
                    "api_cert",
                    "--api-cert",
                    "OUTPOST_API_CERT",
                    "/pin/c.pem",
                    "\"/pin/c.pem\"",
                ),
                pin(
                    "api_key",
                    "--api-key",
                    "OUTPOST_API_KEY",
                    "/pin/k.pem",
                    "\"/pin/k.pem\"",
                ),
            ],
            every_command: false,
            holds: |s| {
                s.api_cert.as_deref() == Some(Path::new("/pin/c.pem"))
                    && s.api_key.as_deref() == Some(Path::new("/pin/k.pem"))
            },
        },
        Case {
            pins: &[pin(
                "api_token_hours",
                "--api-token-hours",
                "OUTPOST_API_TOKEN_HOURS",
                "5",
                "5",
            )],
            every_command: false,
            holds: |s| s.api_token_ttl == secs(5 * 3600),
        },
        Case {
            pins: &[pin(
                "password_max_age_days",
                "--password-max-age-days",
                "OUTPOST_PASSWORD_MAX_AGE_DAYS",
                "0",
                "0",
            )],
            every_command: false,
            holds: |s| s.password_max_age.is_zero(),
        },
        Case {
            pins: &[pin(
                "api_header_timeout_secs",
                "--api-header-timeout-secs",
                "OUTPOST_API_HEADER_TIMEOUT_SECS",
                "3",
                "3",
            )],
            every_command: false,
            holds: |s| s.api_header_timeout == secs(3),
        },
        Case {
            pins: &[pin(
                "api_idle_timeout_secs",
                "--api-idle-timeout-secs",
                "OUTPOST_API_IDLE_TIMEOUT_SECS",
                "33",
                "33",
            )],
            every_command: false,
            holds: |s| s.api_idle_timeout == secs(33),
        },
        Case {
            pins: &[pin(
                "api_max_connections",
                "--api-max-connections",
                "OUTPOST_API_MAX_CONNECTIONS",
                "500",
                "500",
            )],
            every_command: false,
            holds: |s| s.api_max_connections == 500,
        },
        Case {
            pins: &[pin(
                "api_max_connections_per_address",
                "--api-max-connections-per-address",
                "OUTPOST_API_MAX_CONNECTIONS_PER_ADDRESS",
                "20",
                "20",
            )],
            every_command: false,
            holds: |s| s.api_max_connections_per_address == 20,
        },
        Case {
            pins: &[pin(
                "agent_binary",
                "--agent-binary",
                "OUTPOST_AGENT_BINARY",
                "/pin/outpost-agent",
                "\"/pin/outpost-agent\"",
            )],
            every_command: false,
            holds: |s| s.agent_binary.as_deref() == Some(Path::new("/pin/outpost-agent")),
        },
        Case {
            pins: &[Pin {
                key: "admin_launch_vars_templates",
                flag: "--admin-launch-vars-templates",
                env: "OUTPOST_ADMIN_LAUNCH_VARS_TEMPLATES",
                arg: "",
                var: "true",
                toml: "true",
            }],
            every_command: false,
            holds: |s| s.admin_launch_vars_templates,
        },
    ];

    fn flag_args(pins: &[Pin]) -> Vec<&'static str> {
        let mut argv = Vec::new();
        for p in pins {
            argv.push(p.flag);
            if !p.arg.is_empty() {
                argv.push(p.arg);
            }
        }
        argv
    }

    #[test]
    fn every_setting_is_read_from_its_flag_its_environment_variable_and_its_file_key() {
        let _env = clean_env();
        let dir = tempfile::tempdir().expect("temporary directory");
        let defaults = resolve(&["serve"]).expect("defaults");
        for case in CASES {
            let keys: Vec<&str> = case.pins.iter().map(|p| p.key).collect();
            assert!(
                !(case.holds)(&defaults),
                "{keys:?}: the default already holds"
            );

            let mut argv = vec!["serve"];
            argv.extend(flag_args(case.pins));
            let s = resolve(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e:#}"));
            assert!((case.holds)(&s), "{argv:?} not applied");

            for p in case.pins {
                std::env::set_var(p.env, p.var);
            }
            let from_env = resolve(&["serve"]);
            for p in case.pins {
                std::env::remove_var(p.env);
            }
            let s = from_env.unwrap_or_else(|e| panic!("{keys:?} from the environment: {e:#}"));
            assert!((case.holds)(&s), "{keys:?}: the environment not applied");

            let text: String = case
                .pins
                .iter()
                .map(|p| format!("{} = {}\n", p.key, p.toml))
                .collect();
            let config = write_config(dir.path(), &text);
            let s = resolve(&["serve", "--config", &config])
                .unwrap_or_else(|e| panic!("{text}: {e:#}"));
            assert!((case.holds)(&s), "{text}: not applied");

            if case.every_command {
                // Before the command's name or after it, on any command.
                let mut argv = flag_args(case.pins);
                argv.push("migrate");
                let s = resolve(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e:#}"));
                assert!((case.holds)(&s), "{argv:?} not applied");
                let mut argv = vec!["agents"];
                argv.extend(flag_args(case.pins));
                let s = resolve(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e:#}"));
                assert!((case.holds)(&s), "{argv:?} not applied");
            } else {
                let mut argv = vec!["migrate"];
                argv.extend(flag_args(case.pins));
                let refused = resolve(&argv).expect_err("a daemon setting on migrate");
                assert!(
                    refused
                        .to_string()
                        .contains("is a setting of `serve`, not of `migrate`"),
                    "{argv:?}: {refused:#}"
                );
            }
        }
    }

    #[test]
    fn a_flag_beats_the_environment_which_beats_the_file_which_beats_the_default() {
        let _env = clean_env();
        let dir = tempfile::tempdir().expect("temporary directory");
        let config = write_config(
            dir.path(),
            "retention_days = 30\ndatabase_url = \"sqlite:///file.db\"\nadmin_launch_vars_templates = true\nmigrate_on_start = false\n",
        );
        let with_file = ["serve", "--config", config.as_str()];
        let with_flags = [
            &with_file[..],
            &[
                "--retention-days",
                "50",
                "--database-url",
                "sqlite:///flag.db",
            ],
        ]
        .concat();

        let s = resolve(&["serve"]).unwrap();
        assert_eq!(s.retention, secs(90 * 86400));
        assert!(s.database_url.ends_with("/var/lib/outpost/outpost.db"));
        let s = resolve(&with_file).unwrap();
        assert_eq!(s.retention, secs(30 * 86400));
        assert_eq!(s.database_url, "sqlite:///file.db");
        assert!(s.admin_launch_vars_templates && !s.migrate_on_start);

        std::env::set_var("OUTPOST_RETENTION_DAYS", "40");
        std::env::set_var("OUTPOST_DATABASE_URL", "sqlite:///env.db");
        // An environment variable saying "false" overrides the file's "true", as any other does.
        std::env::set_var("OUTPOST_ADMIN_LAUNCH_VARS_TEMPLATES", "false");
        std::env::set_var("OUTPOST_NO_MIGRATE", "false");
        let from_env = resolve(&with_file);
        let from_flags = resolve(&with_flags);
        for k in [
            "OUTPOST_RETENTION_DAYS",
            "OUTPOST_DATABASE_URL",
            "OUTPOST_ADMIN_LAUNCH_VARS_TEMPLATES",
            "OUTPOST_NO_MIGRATE",
        ] {
            std::env::remove_var(k);
        }
        let s = from_env.unwrap();
        assert_eq!(s.retention, secs(40 * 86400));
        assert_eq!(s.database_url, "sqlite:///env.db");
        assert!(!s.admin_launch_vars_templates && s.migrate_on_start);
        let s = from_flags.unwrap();
        assert_eq!(s.retention, secs(50 * 86400));
        assert_eq!(s.database_url, "sqlite:///flag.db");

        // The file itself may be named in the environment.
        std::env::set_var("OUTPOST_CONFIG", &config);
        let s = resolve(&["migrate"]);
        std::env::remove_var("OUTPOST_CONFIG");
        assert_eq!(s.unwrap().database_url, "sqlite:///file.db");
    }

    #[test]
    fn the_file_refuses_unknown_keys_and_has_keys_no_flag_sets() {
        let _env = clean_env();
        let dir = tempfile::tempdir().expect("temporary directory");
        let config = write_config(dir.path(), "retention_days = 30\nretention_dayz = 3\n");
        let e = resolve(&["serve", "--config", &config]).expect_err("a typo accepted");
        assert!(
            format!("{e:#}").contains("line 2") && format!("{e:#}").contains("retention_dayz"),
            "{e:#}"
        );
        let config = write_config(dir.path(), "shutdown_timeout_secs = 7\n");
        let s = resolve(&["serve", "--config", &config]).unwrap();
        assert_eq!(s.shutdown_timeout, secs(7));
        assert!(resolve(&["serve", "--shutdown-timeout-secs", "7"]).is_err());
    }

    #[test]
    fn daemon_settings_reach_only_serve_but_bundle_takes_the_agent_binary() {
        let _env = clean_env();
        let dir = tempfile::tempdir().expect("temporary directory");
        let config = write_config(dir.path(), "agent_binary = \"/file/agent\"\n");
        let bundle = ["bundle", "--name", "b1", "--config", config.as_str()];
        let s = resolve(&bundle).unwrap();
        assert_eq!(s.agent_binary.as_deref(), Some(Path::new("/file/agent")));
        let s = resolve(&[&bundle[..], &["--agent-binary", "/flag/agent"]].concat()).unwrap();
        assert_eq!(s.agent_binary.as_deref(), Some(Path::new("/flag/agent")));

        // Another command reads no daemon setting from the environment (as before the flags
        // were declared once): only serve's own process environment configures the daemon.
        std::env::set_var("OUTPOST_LISTEN", "127.0.0.1:9001");
        let s = resolve(&["migrate"]);
        std::env::remove_var("OUTPOST_LISTEN");
        assert_eq!(s.unwrap().listen.port(), 7443);
        // dev's own --api-listen stays its own.
        let (cli, _) = parse(["outpost-controller", "dev", "--api-listen", "127.0.0.1:1"]).unwrap();
        assert!(matches!(cli.command, Command::Dev(_)));
    }

    #[test]
    fn the_command_line_is_well_formed() {
        commands::with_settings(Cli::command()).debug_assert();
    }
}
