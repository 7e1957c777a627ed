//! The controller's settings: a TOML file, then `OUTPOST_*` environment variables, then flags.
//! A flag overrides the environment, which overrides the file, which overrides the defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
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

/// The configuration file: every key optional, unknown keys refused (a typo should not be
/// silently ignored).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub database_url: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub enroll_listen: Option<SocketAddr>,
    pub controller_id: Option<String>,
    pub routing_keys: Option<Vec<String>>,
    pub agent_grace_secs: Option<u64>,
    pub heartbeat_interval_secs: Option<u64>,
    pub agent_cert_days: Option<u64>,
    pub retention_days: Option<u64>,
    pub sweep_interval_ms: Option<u64>,
    pub max_running_per_server: Option<u32>,
    pub default_time_limit_secs: Option<u32>,
    pub migrate_on_start: Option<bool>,
    pub shutdown_timeout_secs: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub log_format: Option<LogFormat>,
    pub db_pool_size: Option<u32>,
    pub db_pool_overflow: Option<u32>,
    pub db_pool_timeout_secs: Option<u64>,
    pub db_pool_recycle_secs: Option<u64>,
    pub api_listen: Option<SocketAddr>,
    pub api_cert: Option<PathBuf>,
    pub api_key: Option<PathBuf>,
    pub api_token_hours: Option<u64>,
    pub password_max_age_days: Option<u64>,
    pub api_header_timeout_secs: Option<u64>,
    pub api_idle_timeout_secs: Option<u64>,
    pub api_max_connections: Option<u32>,
    pub api_max_connections_per_address: Option<u32>,
    pub agent_binary: Option<PathBuf>,
    pub admin_launch_vars_templates: Option<bool>,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| {
            // toml's own rendering spans several lines; an operator gets one.
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            let message = match line {
                Some(l) => format!("line {l}: {}", e.message().trim()),
                None => e.message().trim().to_owned(),
            };
            ConfigError::Parse {
                path: path.display().to_string(),
                message,
            }
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The daemon's resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database_url: String,
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
    /// The scheduler's safety-net sweep (it is woken by events otherwise).
    pub sweep_interval: Duration,
    pub max_running_per_server: u32,
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
}

impl Settings {
    /// Defaults for everything but the database and data dir.
    pub fn new(database_url: String, data_dir: PathBuf) -> Settings {
        Settings {
            database_url,
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
            sweep_interval: Duration::from_secs(2),
            max_running_per_server: 1,
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
        }
    }

    /// Applies a configuration file's values over the defaults (the environment and flags are
    /// applied after, by the caller).
    pub fn apply_file(&mut self, f: &FileConfig) -> Result<(), ConfigError> {
        macro_rules! set {
            ($field:ident) => {
                if let Some(v) = f.$field.clone() {
                    self.$field = v;
                }
            };
            ($field:ident, $conv:expr) => {
                if let Some(v) = f.$field {
                    self.$field = $conv(v);
                }
            };
        }
        set!(database_url);
        set!(data_dir);
        set!(listen);
        set!(enroll_listen);
        set!(controller_id);
        set!(routing_keys);
        if let Some(s) = f.agent_grace_secs {
            self.agent_grace = Duration::from_secs(s);
        }
        if let Some(s) = f.heartbeat_interval_secs {
            self.heartbeat_interval = Duration::from_secs(s.max(1));
        }
        if let Some(d) = f.agent_cert_days {
            self.agent_cert_lifetime = Duration::from_secs(d.max(1) * 86400);
        }
        if let Some(d) = f.retention_days {
            self.retention = Duration::from_secs(d * 86400);
        }
        if let Some(ms) = f.sweep_interval_ms {
            self.sweep_interval = Duration::from_millis(ms.max(50));
        }
        set!(max_running_per_server);
        if let Some(s) = f.default_time_limit_secs {
            self.default_time_limit = Duration::from_secs(s.into());
        }
        set!(migrate_on_start);
        if let Some(s) = f.shutdown_timeout_secs {
            self.shutdown_timeout = Duration::from_secs(s);
        }
        if let Some(ms) = f.idle_timeout_ms {
            self.idle_timeout = Duration::from_millis(ms.max(500));
        }
        set!(log_format);
        set!(api_listen);
        if f.api_cert.is_some() {
            self.api_cert = f.api_cert.clone();
        }
        if f.api_key.is_some() {
            self.api_key = f.api_key.clone();
        }
        if f.agent_binary.is_some() {
            self.agent_binary = f.agent_binary.clone();
        }
        if let Some(h) = f.api_token_hours {
            self.api_token_ttl = Duration::from_secs(h.max(1) * 3600);
        }
        if let Some(d) = f.password_max_age_days {
            self.password_max_age = Duration::from_secs(d * 86400);
        }
        if let Some(s) = f.api_header_timeout_secs {
            self.api_header_timeout = Duration::from_secs(s);
        }
        if let Some(s) = f.api_idle_timeout_secs {
            self.api_idle_timeout = Duration::from_secs(s);
        }
        set!(api_max_connections);
        set!(admin_launch_vars_templates);
        set!(api_max_connections_per_address);
        if let Some(v) = f.db_pool_size {
            self.pool.size = v;
        }
        if let Some(v) = f.db_pool_overflow {
            self.pool.overflow = v;
        }
        if let Some(v) = f.db_pool_timeout_secs {
            self.pool.acquire_timeout = Duration::from_secs(v);
        }
        if let Some(v) = f.db_pool_recycle_secs {
            self.pool.recycle = Duration::from_secs(v);
        }
        self.check()
    }

    pub fn check(&self) -> Result<(), ConfigError> {
        if self.retention < Duration::from_secs(86400) {
            return Err(ConfigError::Invalid {
                name: "retention_days",
                message: "must be at least 1 day".into(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_configuration_is_valid() {
        let f: FileConfig = toml::from_str(include_str!("../../examples/controller.toml"))
            .expect("examples/controller.toml");
        let mut s = Settings::new("sqlite://x".into(), "/tmp".into());
        s.apply_file(&f).unwrap();
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.agent_grace, Duration::from_secs(120));
    }

    #[test]
    fn file_values_override_defaults_and_typos_are_refused() {
        let f: FileConfig = toml::from_str(
            "retention_days = 30\nrouting_keys = [\"dc\", \"zone\"]\nlisten = \"127.0.0.1:9000\"",
        )
        .unwrap();
        let mut s = Settings::new("sqlite://x".into(), "/tmp".into());
        s.apply_file(&f).unwrap();
        assert_eq!(s.retention, Duration::from_secs(30 * 86400));
        assert_eq!(s.routing_keys, vec!["dc", "zone"]);
        assert_eq!(s.listen.port(), 9000);
        assert!(toml::from_str::<FileConfig>("retention_dayz = 3").is_err());
        let zero: FileConfig = toml::from_str("retention_days = 0").unwrap();
        assert!(s.apply_file(&zero).is_err());
    }

    #[test]
    fn the_api_edge_limits_are_read_and_zero_is_refused() {
        let mut s = Settings::new("sqlite://x".into(), "/tmp".into());
        assert_eq!(s.api_header_timeout, Duration::from_secs(10));
        let f: FileConfig = toml::from_str(
            "api_header_timeout_secs = 3\napi_idle_timeout_secs = 30\napi_max_connections = 500\napi_max_connections_per_address = 20",
        )
        .unwrap();
        s.apply_file(&f).unwrap();
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
            let f: FileConfig = toml::from_str(zero).unwrap();
            let mut s = Settings::new("sqlite://x".into(), "/tmp".into());
            assert!(s.apply_file(&f).is_err(), "{zero} accepted");
        }
    }
}
