//! The controller's settings, declared once in [`Config`]: each field is a key of the TOML
//! file and a flag with its `OUTPOST_*` environment variable. [`Settings`] is what they resolve
//! to: a flag overrides the environment, which overrides the file, which overrides the defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::store::PoolConfig;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid configuration file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid setting {name}: {message}")]
    Invalid { name: &'static str, message: String },
}

/// Where the data directory is when no layer names one.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/outpost";

/// Help heading of the settings every command reads.
const EVERY_COMMAND: &str = "Settings of every command";
/// Help heading of the daemon's own settings.
const DAEMON: &str = "Daemon settings";

/// One layer of settings: the configuration file, or the environment and flags together.
///
/// Each field is the file's key (serde), its flag and environment variable (clap) and its help,
/// in one place; every one is optional, so that a layer says only what it sets. Fields marked
/// `global` are flags of every command (before or after its name); the others are the daemon's
/// (`serve`). Unknown keys in the file are refused: a typo should not be silently ignored.
/// Values keep their units here (`_secs`, `_ms`, `_days`); [`Settings`] holds durations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Database URL; defaults to SQLite in the data directory.
    #[arg(
        long,
        env = "OUTPOST_DATABASE_URL",
        global = true,
        hide_env_values = true,
        help_heading = EVERY_COMMAND
    )]
    pub database_url: Option<String>,
    /// Where the embedded store, the PKI and playbook files live [default: /var/lib/outpost].
    #[arg(long, env = "OUTPOST_DATA_DIR", global = true, help_heading = EVERY_COMMAND)]
    pub data_dir: Option<PathBuf>,
    /// Maximum pooled connections [default: 20, the seed's pool size].
    #[arg(long, env = "OUTPOST_DB_POOL_SIZE", global = true, help_heading = EVERY_COMMAND)]
    pub db_pool_size: Option<u32>,
    /// Extra connections allowed above the pool size under load [default: 10].
    #[arg(long, env = "OUTPOST_DB_POOL_OVERFLOW", global = true, help_heading = EVERY_COMMAND)]
    pub db_pool_overflow: Option<u32>,
    /// Seconds to wait for a free connection before failing [default: 30].
    #[arg(
        long = "db-pool-timeout",
        value_name = "DB_POOL_TIMEOUT",
        env = "OUTPOST_DB_POOL_TIMEOUT",
        global = true,
        help_heading = EVERY_COMMAND
    )]
    pub db_pool_timeout_secs: Option<u64>,
    /// Seconds after which a connection is closed and replaced [default: 3600].
    #[arg(
        long = "db-pool-recycle",
        value_name = "DB_POOL_RECYCLE",
        env = "OUTPOST_DB_POOL_RECYCLE",
        global = true,
        help_heading = EVERY_COMMAND
    )]
    pub db_pool_recycle_secs: Option<u64>,
    /// Log as human-readable text or as JSON lines [default: text].
    #[arg(
        long,
        env = "OUTPOST_LOG_FORMAT",
        global = true,
        value_enum,
        help_heading = EVERY_COMMAND
    )]
    pub log_format: Option<LogFormat>,

    /// A MySQL/MariaDB read replica of the database: dashboard figures, job and audit lists,
    /// log pages and searches read from it while it replicates within the lag bound
    /// [default: none, everything reads the primary].
    #[arg(
        long,
        env = "OUTPOST_READ_DATABASE_URL",
        hide_env_values = true,
        help_heading = DAEMON
    )]
    pub read_database_url: Option<String>,
    /// Seconds the read replica may lag behind the primary before reads go to the primary
    /// [default: 5].
    #[arg(long, env = "OUTPOST_READ_REPLICA_MAX_LAG_SECS", help_heading = DAEMON)]
    pub read_replica_max_lag_secs: Option<u64>,

    /// UDP address for agent sessions [default: 0.0.0.0:7443].
    #[arg(long, env = "OUTPOST_LISTEN", help_heading = DAEMON)]
    pub listen: Option<SocketAddr>,
    /// UDP address for enrolment [default: 0.0.0.0:7444].
    #[arg(long, env = "OUTPOST_ENROLL_LISTEN", help_heading = DAEMON)]
    pub enroll_listen: Option<SocketAddr>,
    /// This controller's name among those sharing the database [default: hostname-pid].
    #[arg(long, env = "OUTPOST_CONTROLLER_ID", help_heading = DAEMON)]
    pub controller_id: Option<String>,
    /// Server tags that restrict which agents may run a server's jobs (repeatable) [default: dc].
    #[arg(
        long = "routing-key",
        env = "OUTPOST_ROUTING_KEYS",
        value_delimiter = ',',
        help_heading = DAEMON
    )]
    pub routing_keys: Option<Vec<String>>,
    /// Seconds a vanished agent has to come back before its running jobs fail [default: 120].
    #[arg(long, env = "OUTPOST_AGENT_GRACE_SECS", help_heading = DAEMON)]
    pub agent_grace_secs: Option<u64>,
    /// Seconds between agent heartbeats; an agent whose QUIC keep-alive is at least as
    /// frequent lets the keep-alive beat for it [default: a third of the idle timeout, 5].
    #[arg(
        long = "heartbeat-secs",
        value_name = "HEARTBEAT_SECS",
        env = "OUTPOST_HEARTBEAT_SECS",
        help_heading = DAEMON
    )]
    pub heartbeat_interval_secs: Option<u64>,
    /// Lifetime of agent certificates in days; agents renew with a third left [default: 7].
    #[arg(long, env = "OUTPOST_AGENT_CERT_DAYS", help_heading = DAEMON)]
    pub agent_cert_days: Option<u64>,
    /// Days of job output to keep [default: 90]; a finished job's output is archived (see
    /// `archive_url`) and then removed once its last line is this old.
    #[arg(long, env = "OUTPOST_RETENTION_DAYS", help_heading = DAEMON)]
    pub retention_days: Option<u64>,
    /// Where job output and audit records are archived before they leave the database:
    /// `file:///DIR` or `s3://BUCKET/PREFIX` [default: file://<data-dir>/archive].
    #[arg(long, env = "OUTPOST_ARCHIVE_URL", help_heading = DAEMON)]
    pub archive_url: Option<String>,
    /// An S3-compatible server for an `s3://` archive (`https://minio.example:9000`)
    /// [default: AWS].
    #[arg(long, env = "OUTPOST_ARCHIVE_S3_ENDPOINT", help_heading = DAEMON)]
    pub archive_s3_endpoint: Option<String>,
    /// The S3 archive's region [default: us-east-1].
    #[arg(long, env = "OUTPOST_ARCHIVE_S3_REGION", help_heading = DAEMON)]
    pub archive_s3_region: Option<String>,
    /// The S3 archive's access key id; its secret key comes from the environment variable
    /// OUTPOST_ARCHIVE_S3_SECRET_ACCESS_KEY or from `archive_s3_secret_access_key_file`.
    #[arg(long, env = "OUTPOST_ARCHIVE_S3_ACCESS_KEY_ID", help_heading = DAEMON)]
    pub archive_s3_access_key_id: Option<String>,
    /// A file (0600) whose first line is the S3 archive's secret key.
    #[arg(long, env = "OUTPOST_ARCHIVE_S3_SECRET_ACCESS_KEY_FILE", help_heading = DAEMON)]
    pub archive_s3_secret_access_key_file: Option<PathBuf>,
    /// Days after which audit records are exported to the archive (at least 365; the seed
    /// keeps a year) [default: never].
    #[arg(long, env = "OUTPOST_AUDIT_RETENTION_DAYS", help_heading = DAEMON)]
    pub audit_retention_days: Option<u64>,
    /// Seconds a schedule's slot may be late and still run (after downtime); older missed
    /// slots are recorded as skipped [default: 300].
    #[arg(long, env = "OUTPOST_SCHEDULE_GRACE_SECS", help_heading = DAEMON)]
    pub schedule_grace_secs: Option<u64>,
    /// Due schedules one controller plans at the same time, each on up to three database
    /// connections of its pool; on MySQL three times as many planned ones may wait for their
    /// slot and write, on one connection each (1 to 64) [default: 8].
    #[arg(long, env = "OUTPOST_SCHEDULE_FIRE_CONCURRENCY", help_heading = DAEMON)]
    pub schedule_fire_concurrency: Option<u32>,
    /// Milliseconds between the scheduler's safety-net sweeps [default: 2000].
    #[arg(long, env = "OUTPOST_SWEEP_INTERVAL_MS", help_heading = DAEMON)]
    pub sweep_interval_ms: Option<u64>,
    /// Jobs that may run on one server at the same time [default: 1].
    #[arg(long, env = "OUTPOST_MAX_RUNNING_PER_SERVER", help_heading = DAEMON)]
    pub max_running_per_server: Option<u32>,
    /// Leave every launch to the scheduler's round, rather than claiming a one-server
    /// launch's job in the launch's own transaction when an agent has room.
    #[arg(
        long = "no-claim-at-launch",
        env = "OUTPOST_NO_CLAIM_AT_LAUNCH",
        num_args = 0,
        default_missing_value = "true",
        value_parser = clap::builder::TypedValueParser::map(
            clap::builder::BoolValueParser::new(),
            |no: bool| !no
        ),
        help_heading = DAEMON
    )]
    pub claim_at_launch: Option<bool>,
    /// Jobs the scheduler's round claims in one transaction, one commit for all (1 to 256;
    /// 1: a commit per job) [default: 32].
    #[arg(long, env = "OUTPOST_CLAIMS_PER_COMMIT", help_heading = DAEMON)]
    pub claims_per_commit: Option<u32>,
    /// Agents' starts and outcomes recorded in one transaction when they arrive together, one
    /// commit for all (1 to 256; 1: a commit per start and per outcome) [default: 32].
    #[arg(long, env = "OUTPOST_OUTCOMES_PER_COMMIT", help_heading = DAEMON)]
    pub outcomes_per_commit: Option<u32>,
    /// Time limit of a job in seconds [default: 3600].
    #[arg(
        long = "job-time-limit-secs",
        value_name = "JOB_TIME_LIMIT_SECS",
        env = "OUTPOST_JOB_TIME_LIMIT_SECS",
        help_heading = DAEMON
    )]
    pub default_time_limit_secs: Option<u32>,
    /// Milliseconds of silence after which a QUIC peer is considered gone [default: 15000].
    /// Agents send a keep-alive at a third of their own (`--idle-timeout-ms`); a fleet of tens
    /// of thousands of agents per controller may raise both to spend less on idle sessions,
    /// at the cost of noticing a dead agent later.
    #[arg(long, env = "OUTPOST_IDLE_TIMEOUT_MS", help_heading = DAEMON)]
    pub idle_timeout_ms: Option<u64>,
    /// Do not apply pending migrations at start-up.
    // The flag says "no", the file's key "yes": the flag (or `OUTPOST_NO_MIGRATE=true`) is
    // parsed into the key's sense, so that both layers hold the same thing.
    #[arg(
        long = "no-migrate",
        env = "OUTPOST_NO_MIGRATE",
        num_args = 0,
        default_missing_value = "true",
        value_parser = clap::builder::TypedValueParser::map(
            clap::builder::BoolValueParser::new(),
            |no: bool| !no
        ),
        help_heading = DAEMON
    )]
    pub migrate_on_start: Option<bool>,
    /// Seconds a stopping controller waits for its agent sessions, then for the output they
    /// sent to be stored [default: 30].
    // File only: no flag has ever set it.
    #[arg(skip)]
    pub shutdown_timeout_secs: Option<u64>,
    /// A project sync's time limit (git fetch, ansible-galaxy), in seconds (file only).
    #[arg(skip)]
    pub project_sync_time_limit_secs: Option<u64>,
    /// The largest project archive an upload may send, in bytes (file only).
    #[arg(skip)]
    pub project_upload_max_bytes: Option<u64>,
    /// TCP address of the HTTPS API and web UI [default: 0.0.0.0:8443].
    #[arg(long, env = "OUTPOST_API_LISTEN", help_heading = DAEMON)]
    pub api_listen: Option<SocketAddr>,
    /// The API's certificate chain (PEM) [default: the controller's, from the Outpost CA].
    #[arg(long, env = "OUTPOST_API_CERT", requires = "api_key", help_heading = DAEMON)]
    pub api_cert: Option<PathBuf>,
    /// The API certificate's private key (PEM).
    #[arg(long, env = "OUTPOST_API_KEY", requires = "api_cert", help_heading = DAEMON)]
    pub api_key: Option<PathBuf>,
    /// Hours a login's bearer token lives [default: 12].
    #[arg(long, env = "OUTPOST_API_TOKEN_HOURS", help_heading = DAEMON)]
    pub api_token_hours: Option<u64>,
    /// Days before a password must be changed; 0 turns rotation off [default: 90].
    #[arg(long, env = "OUTPOST_PASSWORD_MAX_AGE_DAYS", help_heading = DAEMON)]
    pub password_max_age_days: Option<u64>,
    /// Seconds an API client has to send a request's headers, after TLS and between requests
    /// on a kept-alive HTTP/1 connection [default: 10].
    #[arg(long, env = "OUTPOST_API_HEADER_TIMEOUT_SECS", help_heading = DAEMON)]
    pub api_header_timeout_secs: Option<u64>,
    /// Seconds after which an API connection with no request in flight is closed [default: 60].
    #[arg(long, env = "OUTPOST_API_IDLE_TIMEOUT_SECS", help_heading = DAEMON)]
    pub api_idle_timeout_secs: Option<u64>,
    /// Open API connections at most; more are closed at once [default: 10000].
    #[arg(long, env = "OUTPOST_API_MAX_CONNECTIONS", help_heading = DAEMON)]
    pub api_max_connections: Option<u32>,
    /// Open API connections from one client address (IPv6: one /64) at most [default: 256].
    #[arg(long, env = "OUTPOST_API_MAX_CONNECTIONS_PER_ADDRESS", help_heading = DAEMON)]
    pub api_max_connections_per_address: Option<u32>,
    /// The outpost-agent that install bundles carry, built for the bastions' architecture
    /// [default: the one beside this binary, else /usr/lib/outpost/outpost-agent].
    #[arg(long, env = "OUTPOST_AGENT_BINARY", help_heading = DAEMON)]
    pub agent_binary: Option<PathBuf>,
    /// Let values an admin gives at launch be Jinja templates that ansible evaluates on the
    /// bastion [default: off: every launch value is data, whoever gives it; operators' values
    /// always are].
    #[arg(
        long,
        env = "OUTPOST_ADMIN_LAUNCH_VARS_TEMPLATES",
        num_args = 0,
        default_missing_value = "true",
        help_heading = DAEMON
    )]
    pub admin_launch_vars_templates: Option<bool>,
    /// Seconds between a channel's digests (batched notifications) [default: 900].
    #[arg(long, env = "OUTPOST_NOTIFICATION_DIGEST_SECS", help_heading = DAEMON)]
    pub notification_digest_secs: Option<u64>,
    /// Milliseconds before the first retry of a failed notification; doubled each time
    /// [default: 5000].
    #[arg(long, env = "OUTPOST_NOTIFICATION_RETRY_BASE_MS", help_heading = DAEMON)]
    pub notification_retry_base_ms: Option<u64>,
    /// The longest wait between retries of a notification, in seconds [default: 3600].
    #[arg(long, env = "OUTPOST_NOTIFICATION_RETRY_CAP_SECS", help_heading = DAEMON)]
    pub notification_retry_cap_secs: Option<u64>,
    /// Attempts of one notification before it is given up as dead [default: 12].
    #[arg(long, env = "OUTPOST_NOTIFICATION_MAX_ATTEMPTS", help_heading = DAEMON)]
    pub notification_max_attempts: Option<u32>,
    /// A PEM file of CA certificates webhooks' HTTPS servers may chain to, beside the public
    /// roots.
    #[arg(long, env = "OUTPOST_NOTIFICATION_CA_FILE", help_heading = DAEMON)]
    pub notification_ca_file: Option<PathBuf>,
    /// Minutes an agent may be away before an "agent offline" notification [default: 10].
    #[arg(long, env = "OUTPOST_AGENT_OFFLINE_MINUTES", help_heading = DAEMON)]
    pub agent_offline_minutes: Option<u64>,
    /// Days before a certificate (an agent's, the controller's) expires that it is reported
    /// [default: 2; agents renew theirs with a third of their lifetime left].
    #[arg(long, env = "OUTPOST_CERT_EXPIRY_DAYS", help_heading = DAEMON)]
    pub cert_expiry_days: Option<u64>,
    /// Minutes a ticket of each priority may stay unresolved before an SLA notification
    /// (file only: a table `critical`, `high`, `medium`, `low`) [default: 60, 240, 1440, 4320].
    #[arg(skip)]
    pub ticket_sla_minutes: Option<crate::notification::settings::SlaMinutes>,
}

impl Config {
    /// Reads a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses a configuration file's text; the error is one line, with the line it is about.
    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| {
            // toml's own rendering spans several lines; an operator gets one.
            // Newlines before the span, plus one: a span at a line's start is on that line.
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            match line {
                Some(l) => format!("line {l}: {}", e.message().trim()),
                None => e.message().trim().to_owned(),
            }
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The daemon's resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database_url: String,
    /// A read replica (MySQL/MariaDB) for pages that only show state.
    pub read_database_url: Option<String>,
    /// A replica further behind than this is bypassed for the primary.
    pub read_replica_max_lag: Duration,
    pub data_dir: PathBuf,
    pub pool: PoolConfig,
    /// UDP address of the agent endpoint (mutual TLS).
    pub listen: SocketAddr,
    /// UDP address of the enrolment endpoint.
    pub enroll_listen: SocketAddr,
    /// Names this controller in `agents.connected_controller` and in logs.
    pub controller_id: String,
    /// Server tags that restrict which agents may run a server's jobs.
    pub routing_keys: Vec<String>,
    /// How long a vanished agent has to come back before its jobs fail.
    pub agent_grace: Duration,
    pub heartbeat_interval: Duration,
    pub agent_cert_lifetime: Duration,
    pub retention: Duration,
    /// Where job output and audit records are archived.
    pub archive: crate::archive::ArchiveSettings,
    /// Audit records older than this are exported to the archive (`None`: never).
    pub audit_retention: Option<Duration>,
    /// The scheduler's safety-net sweep (it is woken by events otherwise).
    pub sweep_interval: Duration,
    /// How late a schedule's slot may still run; older missed slots are skipped.
    pub schedule_grace: Duration,
    /// Due schedules this controller plans at the same time (on MySQL three times as many write).
    pub schedule_fire_concurrency: u32,
    pub max_running_per_server: u32,
    /// A one-server launch claims its job in its own transaction when an agent has room
    /// (one synchronous commit from launch to agent instead of two).
    pub claim_at_launch: bool,
    /// Jobs a dispatch round claims in one transaction (a wave's jobs share one commit).
    pub claims_per_commit: u32,
    /// Starts and outcomes recorded in one transaction when they arrive together (a wave's
    /// ends share one commit and one turn on their run's lock).
    pub outcomes_per_commit: u32,
    pub default_time_limit: Duration,
    pub migrate_on_start: bool,
    pub shutdown_timeout: Duration,
    /// QUIC idle timeout: a silent peer is considered gone after this long.
    pub idle_timeout: Duration,
    pub log_format: LogFormat,
    /// TCP address of the HTTPS API and web UI.
    pub api_listen: SocketAddr,
    /// The API's certificate chain and key (PEM); the controller's own from the Outpost CA
    /// when unset.
    pub api_cert: Option<PathBuf>,
    pub api_key: Option<PathBuf>,
    /// How long a login's bearer token lives.
    pub api_token_ttl: Duration,
    /// A password older than this must be changed (zero: never).
    pub password_max_age: Duration,
    /// Time an API client has to send a whole request head, from the end of the TLS handshake
    /// and, on HTTP/1, from the end of the previous response (an idle keep-alive connection is
    /// closed after it too).
    pub api_header_timeout: Duration,
    /// An API connection with no request in flight for this long is closed (HTTP/2 mostly:
    /// HTTP/1 waits for its next request only `api_header_timeout`).
    pub api_idle_timeout: Duration,
    /// Open API connections at most; more are closed at once, before TLS.
    pub api_max_connections: u32,
    /// Open API connections from one client address (an IPv6 client: its /64) at most.
    pub api_max_connections_per_address: u32,
    /// The outpost-agent that install bundles carry; unset: found beside this executable or
    /// where the package puts it (see [`crate::bundle::locate_agent_binary`]).
    pub agent_binary: Option<PathBuf>,
    /// Whether values an *admin* gives at launch may be Jinja templates that ansible
    /// evaluates on the bastion. Off: every launch value is data (`!unsafe`), whoever gives it.
    /// Operators' and viewers' values are data whatever this says.
    pub admin_launch_vars_templates: bool,
    /// How long a project sync (git fetch and export, ansible-galaxy installs, packing) may take.
    pub project_sync_time_limit: Duration,
    /// The largest archive `POST /api/v1/projects/{id}/archive` reads (refused before reading).
    pub project_upload_max_bytes: u64,
    /// Notifications: digests, retries, SLA and sweeps.
    pub notifications: crate::notification::settings::NotifySettings,
}

impl Settings {
    /// Defaults for everything but the database and data dir.
    pub fn new(database_url: String, data_dir: PathBuf) -> Settings {
        let archive = crate::archive::ArchiveSettings::directory(&data_dir.join("archive"));
        Settings {
            database_url,
            read_database_url: None,
            read_replica_max_lag: Duration::from_secs(5),
            data_dir,
            pool: PoolConfig::default(),
            listen: SocketAddr::from(([0, 0, 0, 0], outpost_protocol::DEFAULT_AGENT_PORT)),
            enroll_listen: SocketAddr::from(([0, 0, 0, 0], outpost_protocol::DEFAULT_ENROLL_PORT)),
            controller_id: default_controller_id(),
            routing_keys: vec!["dc".to_owned()],
            agent_grace: Duration::from_secs(120),
            heartbeat_interval: Duration::from_secs(5),
            agent_cert_lifetime: Duration::from_secs(7 * 86400),
            retention: Duration::from_secs(90 * 86400),
            archive,
            audit_retention: None,
            sweep_interval: Duration::from_secs(2),
            schedule_grace: Duration::from_secs(300),
            schedule_fire_concurrency: 8,
            max_running_per_server: 1,
            claim_at_launch: true,
            claims_per_commit: 32,
            outcomes_per_commit: 32,
            default_time_limit: Duration::from_secs(3600),
            migrate_on_start: true,
            shutdown_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(15),
            log_format: LogFormat::Text,
            api_listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            api_cert: None,
            api_key: None,
            agent_binary: None,
            admin_launch_vars_templates: false,
            project_sync_time_limit: Duration::from_secs(600),
            project_upload_max_bytes: 512 << 20,
            api_token_ttl: Duration::from_secs(12 * 3600),
            password_max_age: Duration::from_secs(90 * 86400),
            api_header_timeout: Duration::from_secs(10),
            api_idle_timeout: Duration::from_secs(60),
            // About 30 KiB each when idle (BENCHMARKS.md, "Idle API connections"): 300 MiB
            // at most, within the unit's file limit.
            api_max_connections: 10_000,
            // A browser opens at most 6 HTTP/1 connections to a host (one with HTTP/2), so this
            // serves some forty browsers behind one NAT, while one client alone cannot take
            // more than a fortieth of api_max_connections.
            api_max_connections_per_address: 256,
            notifications: Default::default(),
        }
    }

    /// Resolves layers of settings, lowest first (the file, then the environment and flags): a
    /// value set in a layer overrides the layers before it, and one set in none is the default.
    pub fn resolve(layers: &[&Config]) -> Result<Settings, ConfigError> {
        // The default database lives in the data directory, wherever that ends up.
        let data_dir = layers
            .iter()
            .rev()
            .find_map(|l| l.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let mut s = Settings::new(
            format!("sqlite://{}", data_dir.join("outpost.db").display()),
            data_dir,
        );
        for layer in layers {
            s.apply(layer);
        }
        // Unless set, agents beat as often as their keep-alive goes out with the same idle
        // timeout (a third of it), so that an agent given this controller's idle timeout lets
        // its keep-alive beat for it: one setting scales a large fleet's idle tick.
        if layers.iter().all(|l| l.heartbeat_interval_secs.is_none()) {
            s.heartbeat_interval = (s.idle_timeout / 3).max(Duration::from_secs(1));
        }
        s.check()?;
        Ok(s)
    }

    /// Sets what `c` sets, converting its units (and raising values below a floor to it).
    fn apply(&mut self, c: &Config) {
        let secs = Duration::from_secs;
        let days = |d: u64| secs(d.saturating_mul(86400));
        if let Some(v) = &c.database_url {
            self.database_url = v.clone();
        }
        if let Some(v) = &c.data_dir {
            self.data_dir = v.clone();
        }
        if let Some(v) = &c.read_database_url {
            // An empty value (an environment variable set to nothing) means no replica.
            self.read_database_url = Some(v.clone()).filter(|u| !u.trim().is_empty());
        }
        if let Some(v) = c.read_replica_max_lag_secs {
            self.read_replica_max_lag = secs(v);
        }
        if let Some(v) = c.db_pool_size {
            self.pool.size = v;
        }
        if let Some(v) = c.db_pool_overflow {
            self.pool.overflow = v;
        }
        if let Some(v) = c.db_pool_timeout_secs {
            self.pool.acquire_timeout = secs(v);
        }
        if let Some(v) = c.db_pool_recycle_secs {
            self.pool.recycle = secs(v);
        }
        if let Some(v) = c.log_format {
            self.log_format = v;
        }
        if let Some(v) = c.listen {
            self.listen = v;
        }
        if let Some(v) = c.enroll_listen {
            self.enroll_listen = v;
        }
        if let Some(v) = &c.controller_id {
            self.controller_id = v.clone();
        }
        if let Some(v) = &c.routing_keys {
            self.routing_keys = v.clone();
        }
        if let Some(v) = c.agent_grace_secs {
            self.agent_grace = secs(v);
        }
        if let Some(v) = c.heartbeat_interval_secs {
            self.heartbeat_interval = secs(v.max(1));
        }
        if let Some(v) = c.agent_cert_days {
            self.agent_cert_lifetime = days(v.max(1));
        }
        if let Some(v) = c.retention_days {
            self.retention = days(v);
        }
        if let Some(v) = &c.archive_url {
            self.archive.url = v.clone();
        }
        if let Some(v) = &c.archive_s3_endpoint {
            self.archive.s3_endpoint = Some(v.clone());
        }
        if let Some(v) = &c.archive_s3_region {
            self.archive.s3_region = Some(v.clone());
        }
        if let Some(v) = &c.archive_s3_access_key_id {
            self.archive.s3_access_key_id = Some(v.clone());
        }
        if let Some(v) = &c.archive_s3_secret_access_key_file {
            self.archive.s3_secret_access_key_file = Some(v.clone());
        }
        if let Some(v) = c.audit_retention_days {
            self.audit_retention = Some(days(v));
        }
        if let Some(v) = c.schedule_grace_secs {
            self.schedule_grace = secs(v);
        }
        if let Some(v) = c.schedule_fire_concurrency {
            self.schedule_fire_concurrency = v;
        }
        if let Some(v) = c.sweep_interval_ms {
            self.sweep_interval = Duration::from_millis(v.max(50));
        }
        if let Some(v) = c.max_running_per_server {
            self.max_running_per_server = v;
        }
        if let Some(v) = c.claim_at_launch {
            self.claim_at_launch = v;
        }
        if let Some(v) = c.claims_per_commit {
            self.claims_per_commit = v;
        }
        if let Some(v) = c.outcomes_per_commit {
            self.outcomes_per_commit = v;
        }
        if let Some(v) = c.default_time_limit_secs {
            self.default_time_limit = secs(v.into());
        }
        if let Some(v) = c.idle_timeout_ms {
            self.idle_timeout = Duration::from_millis(v.max(500));
        }
        if let Some(v) = c.migrate_on_start {
            self.migrate_on_start = v;
        }
        if let Some(v) = c.shutdown_timeout_secs {
            self.shutdown_timeout = secs(v);
        }
        if let Some(v) = c.api_listen {
            self.api_listen = v;
        }
        if let Some(v) = &c.api_cert {
            self.api_cert = Some(v.clone());
        }
        if let Some(v) = &c.api_key {
            self.api_key = Some(v.clone());
        }
        if let Some(v) = c.api_token_hours {
            self.api_token_ttl = secs(v.max(1).saturating_mul(3600));
        }
        if let Some(v) = c.password_max_age_days {
            self.password_max_age = days(v);
        }
        if let Some(v) = c.api_header_timeout_secs {
            self.api_header_timeout = secs(v);
        }
        if let Some(v) = c.api_idle_timeout_secs {
            self.api_idle_timeout = secs(v);
        }
        if let Some(v) = c.api_max_connections {
            self.api_max_connections = v;
        }
        if let Some(v) = c.api_max_connections_per_address {
            self.api_max_connections_per_address = v;
        }
        if let Some(v) = &c.agent_binary {
            self.agent_binary = Some(v.clone());
        }
        if let Some(v) = c.admin_launch_vars_templates {
            self.admin_launch_vars_templates = v;
        }
        if let Some(v) = c.project_sync_time_limit_secs {
            self.project_sync_time_limit = secs(v);
        }
        if let Some(v) = c.project_upload_max_bytes {
            self.project_upload_max_bytes = v;
        }
        apply_notifications(&mut self.notifications, c);
    }

    pub fn check(&self) -> Result<(), ConfigError> {
        if self.retention < Duration::from_secs(86400) {
            return Err(ConfigError::Invalid {
                name: "retention_days",
                message: "must be at least 1 day".into(),
            });
        }
        if self
            .audit_retention
            .is_some_and(|r| r < Duration::from_secs(365 * 86400))
        {
            return Err(ConfigError::Invalid {
                name: "audit_retention_days",
                message: "must be at least 365 days: audit records are kept a year".into(),
            });
        }
        crate::archive::Archive::new(&self.archive).map_err(|e| ConfigError::Invalid {
            name: "archive_url",
            message: e.to_string(),
        })?;
        if !(1..=64).contains(&self.schedule_fire_concurrency) {
            return Err(ConfigError::Invalid {
                name: "schedule_fire_concurrency",
                message: "must be 1 to 64".into(),
            });
        }
        if !(1..=256).contains(&self.claims_per_commit) {
            return Err(ConfigError::Invalid {
                name: "claims_per_commit",
                message: "must be 1 to 256".into(),
            });
        }
        if !(1..=256).contains(&self.outcomes_per_commit) {
            return Err(ConfigError::Invalid {
                name: "outcomes_per_commit",
                message: "must be 1 to 256".into(),
            });
        }
        if self.max_running_per_server == 0 {
            return Err(ConfigError::Invalid {
                name: "max_running_per_server",
                message: "must be at least 1".into(),
            });
        }
        if self.api_cert.is_some() != self.api_key.is_some() {
            return Err(ConfigError::Invalid {
                name: "api_cert",
                message: "api_cert and api_key go together: set both or neither".into(),
            });
        }
        // Zero would mean "no time at all" or "no connection at all", never "unlimited".
        for (name, zero) in [
            ("api_header_timeout_secs", self.api_header_timeout.is_zero()),
            ("api_idle_timeout_secs", self.api_idle_timeout.is_zero()),
            ("api_max_connections", self.api_max_connections == 0),
            (
                "api_max_connections_per_address",
                self.api_max_connections_per_address == 0,
            ),
        ] {
            if zero {
                return Err(ConfigError::Invalid {
                    name,
                    message: "must be at least 1".into(),
                });
            }
        }
        if let Some(url) = &self.read_database_url {
            if !(url.starts_with("mysql:") || url.starts_with("mariadb:")) {
                return Err(ConfigError::Invalid {
                    name: "read_database_url",
                    message: format!(
                        "{}: a read replica must be MySQL/MariaDB (mysql:// or mariadb://)",
                        crate::store::redact_url(url)
                    ),
                });
            }
            if !(self.database_url.starts_with("mysql:")
                || self.database_url.starts_with("mariadb:"))
            {
                return Err(ConfigError::Invalid {
                    name: "read_database_url",
                    message: "the database is SQLite, which has no replicas: read replicas need a MySQL/MariaDB database_url".into(),
                });
            }
        }
        if self.pool.size == 0 {
            return Err(ConfigError::Invalid {
                name: "db_pool_size",
                message: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

/// `<hostname>-<pid>`: unique among controllers sharing a database.
pub fn default_controller_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "controller".into());
    format!("{host}-{}", std::process::id())
}

/// The notification settings a configuration layer sets.
fn apply_notifications(n: &mut crate::notification::settings::NotifySettings, c: &Config) {
    let secs = Duration::from_secs;
    if let Some(v) = c.notification_digest_secs {
        n.digest = secs(v.max(1));
    }
    if let Some(v) = c.notification_retry_base_ms {
        n.backoff.base = Duration::from_millis(v.max(100));
    }
    if let Some(v) = c.notification_retry_cap_secs {
        n.backoff.cap = secs(v.max(1));
    }
    if let Some(v) = c.notification_max_attempts {
        n.backoff.max_attempts = v.max(1);
    }
    if let Some(v) = &c.notification_ca_file {
        n.ca_file = Some(v.clone());
    }
    if let Some(v) = c.agent_offline_minutes {
        n.agent_offline = secs(v.max(1).saturating_mul(60));
    }
    if let Some(v) = c.cert_expiry_days {
        n.cert_expiry = secs(v.saturating_mul(86400));
    }
    if let Some(v) = c.ticket_sla_minutes {
        n.sla = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> Config {
        Config::from_toml(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn the_example_configuration_is_valid() {
        let f = file(include_str!("../../examples/controller.toml"));
        let s = Settings::resolve(&[&f]).unwrap();
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.agent_grace, Duration::from_secs(120));
        assert!(s.database_url.starts_with("mysql://"));
    }

    #[test]
    fn the_archive_defaults_to_the_data_dir_and_bad_settings_are_refused() {
        let s = Settings::resolve(&[&file("data_dir = \"/srv/o\"")]).unwrap();
        assert_eq!(s.archive.url, "file:///srv/o/archive");
        assert_eq!(
            s.audit_retention, None,
            "audit records are never exported by default"
        );
        let e = Settings::resolve(&[&file("archive_url = \"ftp://x\"")]).unwrap_err();
        assert!(e.to_string().contains("archive_url"), "{e}");
        let e = Settings::resolve(&[&file("audit_retention_days = 30")]).unwrap_err();
        assert!(e.to_string().contains("365"), "{e}");
        let s = Settings::resolve(&[&file("audit_retention_days = 400")]).unwrap();
        assert_eq!(s.audit_retention, Some(Duration::from_secs(400 * 86400)));
    }

    #[test]
    fn file_values_override_defaults_and_typos_are_refused() {
        let f = file(
            "retention_days = 30\nrouting_keys = [\"dc\", \"zone\"]\nlisten = \"127.0.0.1:9000\"",
        );
        let s = Settings::resolve(&[&f]).unwrap();
        assert_eq!(s.retention, Duration::from_secs(30 * 86400));
        assert_eq!(s.routing_keys, vec!["dc", "zone"]);
        assert_eq!(s.listen.port(), 9000);
        let typo = Config::from_toml("retention_days = 3\nretention_dayz = 3").unwrap_err();
        assert!(
            typo.contains("line 2") && typo.contains("retention_dayz"),
            "{typo}"
        );
        assert!(Settings::resolve(&[&file("retention_days = 0")]).is_err());
    }

    #[test]
    fn a_later_layer_overrides_an_earlier_one_and_unset_falls_through() {
        let lower = file("retention_days = 30\nmax_running_per_server = 3\ndata_dir = \"/srv/a\"");
        let upper = Config {
            retention_days: Some(40),
            migrate_on_start: Some(false),
            ..Config::default()
        };
        let s = Settings::resolve(&[&lower, &upper]).unwrap();
        assert_eq!(s.retention, Duration::from_secs(40 * 86400));
        assert_eq!(s.max_running_per_server, 3);
        assert!(!s.migrate_on_start);
        // The default database follows the data directory, from whichever layer sets it.
        assert_eq!(s.database_url, "sqlite:///srv/a/outpost.db");
        let d = Settings::resolve(&[]).unwrap();
        assert_eq!(d.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(d.database_url, "sqlite:///var/lib/outpost/outpost.db");
        assert!(d.migrate_on_start);
    }

    #[test]
    fn the_heartbeat_follows_the_idle_timeout_unless_set() {
        assert_eq!(
            Settings::resolve(&[]).unwrap().heartbeat_interval,
            Duration::from_secs(5)
        );
        let slow = file("idle_timeout_ms = 30000");
        let s = Settings::resolve(&[&slow]).unwrap();
        assert_eq!(s.heartbeat_interval, Duration::from_secs(10));
        let set = Config {
            heartbeat_interval_secs: Some(2),
            ..Config::default()
        };
        let s = Settings::resolve(&[&set, &slow]).unwrap();
        assert_eq!(
            s.heartbeat_interval,
            Duration::from_secs(2),
            "set in any layer"
        );
        let tiny = file("idle_timeout_ms = 600");
        assert_eq!(
            Settings::resolve(&[&tiny]).unwrap().heartbeat_interval,
            Duration::from_secs(1)
        );
    }

    #[test]
    fn the_api_edge_limits_are_read_and_zero_is_refused() {
        let s = Settings::resolve(&[]).unwrap();
        assert_eq!(s.api_header_timeout, Duration::from_secs(10));
        let f = file(
            "api_header_timeout_secs = 3\napi_idle_timeout_secs = 30\napi_max_connections = 500\napi_max_connections_per_address = 20",
        );
        let s = Settings::resolve(&[&f]).unwrap();
        assert_eq!(s.api_header_timeout, Duration::from_secs(3));
        assert_eq!(s.api_idle_timeout, Duration::from_secs(30));
        assert_eq!(
            (s.api_max_connections, s.api_max_connections_per_address),
            (500, 20)
        );
        for zero in [
            "api_header_timeout_secs = 0",
            "api_idle_timeout_secs = 0",
            "api_max_connections = 0",
            "api_max_connections_per_address = 0",
        ] {
            assert!(
                Settings::resolve(&[&file(zero)]).is_err(),
                "{zero} accepted"
            );
        }
    }

    #[test]
    fn a_read_replica_needs_a_mysql_primary_and_a_mysql_url() {
        let d = Settings::resolve(&[]).unwrap();
        assert_eq!(d.read_database_url, None);
        assert_eq!(d.read_replica_max_lag, Duration::from_secs(5));
        let f = file(
            "database_url = \"mysql://root@db:3306/outpost\"\nread_database_url = \"mysql://root@replica:3306/outpost\"\nread_replica_max_lag_secs = 30",
        );
        let s = Settings::resolve(&[&f]).unwrap();
        assert_eq!(
            s.read_database_url.as_deref(),
            Some("mysql://root@replica:3306/outpost")
        );
        assert_eq!(s.read_replica_max_lag, Duration::from_secs(30));
        let sqlite = file("read_database_url = \"mysql://root:hunter2@replica:3306/outpost\"");
        let e = Settings::resolve(&[&sqlite]).unwrap_err().to_string();
        assert!(e.contains("SQLite") && !e.contains("hunter2"), "{e}");
        let not_mysql = file(
            "database_url = \"mysql://root@db:3306/outpost\"\nread_database_url = \"sqlite:///tmp/r.db\"",
        );
        let e = Settings::resolve(&[&not_mysql]).unwrap_err().to_string();
        assert!(e.contains("must be MySQL/MariaDB"), "{e}");
        // An empty value (an unset environment variable's stand-in) is no replica.
        let empty = file("read_database_url = \"\"");
        assert_eq!(
            Settings::resolve(&[&empty]).unwrap().read_database_url,
            None
        );
    }
}
