//! `outpost-controller`: the Outpost controller daemon and its maintenance commands.

mod dev;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use outpost_controller::config::{FileConfig, LogFormat, Settings};
use outpost_controller::model::{Paging, Role};
use outpost_controller::pki::{self, PkiPaths};
use outpost_controller::store::audit::Actor;
use outpost_controller::store::users::NewUser;
use outpost_controller::{enroll, server, Store};
use tokio_util::sync::CancellationToken;

/// The Outpost controller: owns the state, schedules Ansible jobs on agents, ingests their output.
///
/// The database is chosen by URL: `mysql://user:pass@host:3306/outpost` (or `mariadb://`) for
/// production and several controllers; `sqlite://PATH` for one controller. Without a URL the
/// embedded SQLite store `<data-dir>/outpost.db` is used.
///
/// Settings come from a TOML file (--config), then OUTPOST_* environment variables, then flags;
/// each overrides the one before.
#[derive(Parser)]
#[command(name = "outpost-controller", version)]
struct Cli {
    /// A TOML configuration file (keys as in the README, e.g. `retention_days = 30`).
    #[arg(long, env = "OUTPOST_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Database URL; defaults to SQLite in the data directory.
    #[arg(
        long,
        env = "OUTPOST_DATABASE_URL",
        global = true,
        hide_env_values = true
    )]
    database_url: Option<String>,
    /// Where the embedded store, the PKI and playbook files live [default: /var/lib/outpost].
    #[arg(long, env = "OUTPOST_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Maximum pooled connections [default: 20, the seed's pool size].
    #[arg(long, env = "OUTPOST_DB_POOL_SIZE", global = true)]
    db_pool_size: Option<u32>,
    /// Extra connections allowed above the pool size under load [default: 10].
    #[arg(long, env = "OUTPOST_DB_POOL_OVERFLOW", global = true)]
    db_pool_overflow: Option<u32>,
    /// Seconds to wait for a free connection before failing [default: 30].
    #[arg(long, env = "OUTPOST_DB_POOL_TIMEOUT", global = true)]
    db_pool_timeout: Option<u64>,
    /// Seconds after which a connection is closed and replaced [default: 3600].
    #[arg(long, env = "OUTPOST_DB_POOL_RECYCLE", global = true)]
    db_pool_recycle: Option<u64>,
    /// Log as human-readable text or as JSON lines [default: text].
    #[arg(long, env = "OUTPOST_LOG_FORMAT", global = true, value_enum)]
    log_format: Option<LogFormat>,
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
    /// Run the controller: QUIC for agents (UDP 7443) and enrolment (UDP 7444), and the
    /// HTTPS API (TCP 8443).
    Serve(Box<ServeArgs>),
    /// Create the CA, the controller's certificate and the first admin account.
    Init(InitArgs),
    /// Make a one-time enrolment token for a new agent (prints it once; only its hash is kept).
    Token(TokenArgs),
    /// Make an install bundle for one new agent: a tar.gz with the agent binary, its systemd
    /// unit, a one-time enrolment token (0600) and install.yml, a playbook that installs the
    /// agent on the bastion over SSH, enrols it, starts it and waits until it is online:
    /// `tar xzf outpost-agent-NAME.tar.gz && cd outpost-agent-NAME &&
    /// ansible-playbook -i BASTION, install.yml`.
    Bundle(BundleArgs),
    /// List enrolled agents.
    Agents,
    /// Revoke an agent: its sessions are dropped and it can never connect again.
    Revoke {
        /// The agent's name (as given to its token) or uuid.
        agent: String,
    },
    /// A local controller that stays up until Ctrl-C: SQLite, its own PKI, one local agent,
    /// localhost as a server, the example playbook run once and followed live; then the API
    /// address, the admin password and the `outpost login` command.
    Dev {
        /// Its directory, reused across runs.
        #[arg(long, default_value = "outpost-dev")]
        dir: PathBuf,
        /// Run the playbook once and exit (for scripts and tests).
        #[arg(long)]
        once: bool,
        /// Start over: clear the directory (only one `dev` made) first.
        #[arg(long)]
        fresh: bool,
        /// Where the API listens.
        #[arg(long, default_value = "127.0.0.1:8443")]
        api_listen: SocketAddr,
        /// A playbook to run instead of examples/ping.yml.
        #[arg(long)]
        playbook: Option<PathBuf>,
        /// The ansible-playbook to run.
        #[arg(
            long,
            env = "OUTPOST_ANSIBLE_PLAYBOOK",
            default_value = "ansible-playbook"
        )]
        ansible_playbook: PathBuf,
    },
}

#[derive(Args, Default)]
struct ServeArgs {
    /// UDP address for agent sessions [default: 0.0.0.0:7443].
    #[arg(long, env = "OUTPOST_LISTEN")]
    listen: Option<SocketAddr>,
    /// UDP address for enrolment [default: 0.0.0.0:7444].
    #[arg(long, env = "OUTPOST_ENROLL_LISTEN")]
    enroll_listen: Option<SocketAddr>,
    /// This controller's name among those sharing the database [default: hostname-pid].
    #[arg(long, env = "OUTPOST_CONTROLLER_ID")]
    controller_id: Option<String>,
    /// Server tags that restrict which agents may run a server's jobs (repeatable) [default: dc].
    #[arg(
        long = "routing-key",
        env = "OUTPOST_ROUTING_KEYS",
        value_delimiter = ','
    )]
    routing_keys: Option<Vec<String>>,
    /// Seconds a vanished agent has to come back before its running jobs fail [default: 120].
    #[arg(long, env = "OUTPOST_AGENT_GRACE_SECS")]
    agent_grace_secs: Option<u64>,
    /// Seconds between agent heartbeats [default: 5].
    #[arg(long, env = "OUTPOST_HEARTBEAT_SECS")]
    heartbeat_secs: Option<u64>,
    /// Lifetime of agent certificates in days; agents renew with a third left [default: 7].
    #[arg(long, env = "OUTPOST_AGENT_CERT_DAYS")]
    agent_cert_days: Option<u64>,
    /// Lifetime of agent certificates in seconds (overrides --agent-cert-days; for tests).
    #[arg(long, hide = true)]
    agent_cert_secs: Option<u64>,
    /// Days of job output to keep [default: 90].
    #[arg(long, env = "OUTPOST_RETENTION_DAYS")]
    retention_days: Option<u64>,
    /// Milliseconds between the scheduler's safety-net sweeps [default: 2000].
    #[arg(long, env = "OUTPOST_SWEEP_INTERVAL_MS")]
    sweep_interval_ms: Option<u64>,
    /// Jobs that may run on one server at the same time [default: 1].
    #[arg(long, env = "OUTPOST_MAX_RUNNING_PER_SERVER")]
    max_running_per_server: Option<u32>,
    /// Time limit of a job in seconds [default: 3600].
    #[arg(long, env = "OUTPOST_JOB_TIME_LIMIT_SECS")]
    job_time_limit_secs: Option<u32>,
    /// Milliseconds of silence after which a QUIC peer is considered gone [default: 15000].
    #[arg(long, env = "OUTPOST_IDLE_TIMEOUT_MS")]
    idle_timeout_ms: Option<u64>,
    /// Do not apply pending migrations at start-up.
    #[arg(long, env = "OUTPOST_NO_MIGRATE")]
    no_migrate: bool,
    /// TCP address of the HTTPS API and web UI [default: 0.0.0.0:8443].
    #[arg(long, env = "OUTPOST_API_LISTEN")]
    api_listen: Option<SocketAddr>,
    /// The API's certificate chain (PEM) [default: the controller's, from the Outpost CA].
    #[arg(long, env = "OUTPOST_API_CERT", requires = "api_key")]
    api_cert: Option<PathBuf>,
    /// The API certificate's private key (PEM).
    #[arg(long, env = "OUTPOST_API_KEY", requires = "api_cert")]
    api_key: Option<PathBuf>,
    /// Hours a login's bearer token lives [default: 12].
    #[arg(long, env = "OUTPOST_API_TOKEN_HOURS")]
    api_token_hours: Option<u64>,
    /// Days before a password must be changed; 0 turns rotation off [default: 90].
    #[arg(long, env = "OUTPOST_PASSWORD_MAX_AGE_DAYS")]
    password_max_age_days: Option<u64>,
    /// Seconds an API client has to send a request's headers, after TLS and between requests
    /// on a kept-alive HTTP/1 connection [default: 10].
    #[arg(long, env = "OUTPOST_API_HEADER_TIMEOUT_SECS")]
    api_header_timeout_secs: Option<u64>,
    /// Seconds after which an API connection with no request in flight is closed [default: 60].
    #[arg(long, env = "OUTPOST_API_IDLE_TIMEOUT_SECS")]
    api_idle_timeout_secs: Option<u64>,
    /// Open API connections at most; more are closed at once [default: 10000].
    #[arg(long, env = "OUTPOST_API_MAX_CONNECTIONS")]
    api_max_connections: Option<u32>,
    /// Open API connections from one client address (IPv6: one /64) at most [default: 256].
    #[arg(long, env = "OUTPOST_API_MAX_CONNECTIONS_PER_ADDRESS")]
    api_max_connections_per_address: Option<u32>,
    /// The outpost-agent that install bundles carry [default: the one beside this binary, else
    /// /usr/lib/outpost/outpost-agent].
    #[arg(long, env = "OUTPOST_AGENT_BINARY")]
    agent_binary: Option<PathBuf>,
    /// Let values an admin gives at launch be Jinja templates that ansible evaluates on the
    /// bastion [default: off: every launch value is data, whoever gives it; operators' values
    /// always are].
    #[arg(long, env = "OUTPOST_ADMIN_LAUNCH_VARS_TEMPLATES")]
    admin_launch_vars_templates: bool,
}

#[derive(Args)]
struct InitArgs {
    /// DNS names and IP addresses agents use to reach this controller (repeatable)
    /// [default: localhost, 127.0.0.1 and this host's name].
    #[arg(long = "name")]
    names: Vec<String>,
    /// The first admin's user name.
    #[arg(long, default_value = "admin")]
    admin_user: String,
    /// The first admin's email.
    #[arg(long, default_value = "admin@localhost.localdomain")]
    admin_email: String,
    /// The first admin's password (8 to 72 bytes); read from the environment, never a flag.
    #[arg(long = "admin-password-env", default_value = "OUTPOST_ADMIN_PASSWORD")]
    admin_password_env: String,
    /// Replace an existing CA (every enrolled agent must enrol again).
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct TokenArgs {
    /// The agent's name (unique), e.g. bastion-fra1.
    #[arg(long)]
    name: String,
    /// A label for the agent, e.g. dc=fra1 (repeatable); servers tagged alike are routed to it.
    #[arg(long = "label", value_parser = outpost_protocol::message::parse_label)]
    labels: Vec<(String, String)>,
    /// Hours until the token expires.
    #[arg(long, default_value_t = 24)]
    ttl_hours: u64,
}

#[derive(Args)]
struct BundleArgs {
    /// The agent's name (unique), e.g. bastion-fra1.
    #[arg(long)]
    name: String,
    /// A label for the agent, e.g. dc=fra1 (repeatable); servers tagged alike are routed to it.
    #[arg(long = "label", value_parser = outpost_protocol::message::parse_label)]
    labels: Vec<(String, String)>,
    /// A host the bastion reaches this controller at, among the names of its certificate
    /// (repeatable; the agent tries them in turn) [default: those names, loopback ones left out].
    #[arg(long = "address", value_name = "HOST")]
    addresses: Vec<String>,
    /// Hours until the token expires.
    #[arg(long, default_value_t = 24)]
    ttl_hours: u64,
    /// Where to write the bundle, or - for standard output [default: outpost-agent-NAME.tar.gz].
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Replace FILE if it exists.
    #[arg(long)]
    force: bool,
    /// The outpost-agent to bundle, built for the bastions' architecture [default: the one
    /// beside this binary, else /usr/lib/outpost/outpost-agent].
    #[arg(long, env = "OUTPOST_AGENT_BINARY")]
    agent_binary: Option<PathBuf>,
    /// The agents' UDP port, if not the configured listen port [default: 7443].
    #[arg(long)]
    agent_port: Option<u16>,
    /// The enrolment UDP port, if not the configured enroll_listen port [default: 7444].
    #[arg(long)]
    enroll_port: Option<u16>,
}

impl Cli {
    /// The flags (and environment, which clap merged into them) as a layer of the same shape
    /// as the file, so both are applied by one piece of code.
    fn overlay(&self) -> FileConfig {
        let mut o = FileConfig {
            database_url: self.database_url.clone(),
            data_dir: self.data_dir.clone(),
            db_pool_size: self.db_pool_size,
            db_pool_overflow: self.db_pool_overflow,
            db_pool_timeout_secs: self.db_pool_timeout,
            db_pool_recycle_secs: self.db_pool_recycle,
            log_format: self.log_format,
            ..FileConfig::default()
        };
        if let Command::Serve(a) = &self.command {
            o.listen = a.listen;
            o.enroll_listen = a.enroll_listen;
            o.controller_id = a.controller_id.clone();
            o.routing_keys = a.routing_keys.clone();
            o.agent_grace_secs = a.agent_grace_secs;
            o.heartbeat_interval_secs = a.heartbeat_secs;
            o.agent_cert_days = a.agent_cert_days;
            o.retention_days = a.retention_days;
            o.sweep_interval_ms = a.sweep_interval_ms;
            o.max_running_per_server = a.max_running_per_server;
            o.default_time_limit_secs = a.job_time_limit_secs;
            o.idle_timeout_ms = a.idle_timeout_ms;
            o.migrate_on_start = a.no_migrate.then_some(false);
            o.api_listen = a.api_listen;
            o.api_cert = a.api_cert.clone();
            o.api_key = a.api_key.clone();
            o.api_token_hours = a.api_token_hours;
            o.password_max_age_days = a.password_max_age_days;
            o.api_header_timeout_secs = a.api_header_timeout_secs;
            o.api_idle_timeout_secs = a.api_idle_timeout_secs;
            o.api_max_connections = a.api_max_connections;
            o.api_max_connections_per_address = a.api_max_connections_per_address;
            o.agent_binary = a.agent_binary.clone();
            o.admin_launch_vars_templates = a.admin_launch_vars_templates.then_some(true);
        }
        o
    }

    /// Defaults, then the file, then the environment and flags.
    fn settings(&self) -> anyhow::Result<Settings> {
        let file = match &self.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        let overlay = self.overlay();
        let data_dir = overlay
            .data_dir
            .clone()
            .or(file.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from("/var/lib/outpost"));
        let mut s = Settings::new(
            format!("sqlite://{}", data_dir.join("outpost.db").display()),
            data_dir,
        );
        s.apply_file(&file)?;
        s.apply_file(&overlay)?;
        if let Command::Serve(a) = &self.command {
            if let Some(v) = a.agent_cert_secs {
                s.agent_cert_lifetime = Duration::from_secs(v.max(10));
            }
        }
        s.check()?;
        Ok(s)
    }

    async fn store(&self, s: &Settings) -> anyhow::Result<Store> {
        if s.database_url.starts_with("sqlite:") {
            std::fs::create_dir_all(&s.data_dir).with_context(|| {
                format!("cannot create the data directory {}", s.data_dir.display())
            })?;
        }
        Ok(Store::connect(&s.database_url, &s.pool).await?)
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("OUTPOST_LOG")
        .unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Fires `stop` on SIGTERM or Ctrl-C.
fn stop_on_signals(stop: CancellationToken) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("stop requested");
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        stop.cancel();
    });
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = cli.settings()?;
    match &cli.command {
        Command::Migrate { down } => {
            let store = cli.store(&settings).await?;
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
        Command::Serve(_) => {
            init_tracing(settings.log_format);
            if settings.database_url.starts_with("sqlite:") {
                std::fs::create_dir_all(&settings.data_dir)?;
            }
            let stop = CancellationToken::new();
            stop_on_signals(stop.clone());
            server::serve(settings, stop, |_| {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
            })
            .await?;
            Ok(())
        }
        Command::Init(args) => init(&cli, &settings, args).await,
        Command::Token(args) => {
            let paths = PkiPaths::new(&settings.data_dir);
            let pki = pki::load(&paths)?;
            let store = cli.store(&settings).await?;
            store.migrate_up().await?;
            let ttl = chrono::Duration::hours(i64::try_from(args.ttl_hours).unwrap_or(24));
            let issued = enroll::issue_token(
                &store,
                &pki.ca.fingerprint(),
                &args.name,
                &args.labels,
                ttl,
                &Actor::system(),
            )
            .await?;
            let expires = issued.record.expires_at;
            eprintln!(
                "enrolment token for agent '{}', valid until {expires} (shown once):",
                args.name
            );
            println!("{}", issued.token.encode());
            store.close().await;
            Ok(())
        }
        Command::Bundle(args) => bundle(&cli, &settings, args).await,
        Command::Agents => {
            let store = cli.store(&settings).await?;
            let page = store.list_agents(Paging::new(1000, 0)).await?;
            println!(
                "{:<24} {:<36} {:<8} {:<22} LABELS",
                "NAME", "UUID", "STATE", "LAST SEEN"
            );
            for a in page.items {
                let state = if a.revoked {
                    "revoked"
                } else if a.connected_controller.is_some() {
                    "online"
                } else {
                    "offline"
                };
                let seen = a
                    .last_seen
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_else(|| "never".into());
                let labels: Vec<String> = a
                    .label_pairs()
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                println!(
                    "{:<24} {:<36} {:<8} {:<22} {}",
                    a.name,
                    a.uuid,
                    state,
                    seen,
                    labels.join(",")
                );
            }
            store.close().await;
            Ok(())
        }
        Command::Revoke { agent } => {
            let store = cli.store(&settings).await?;
            let found = match store.get_agent_by_name(agent).await {
                Ok(a) => a,
                Err(_) => store
                    .get_agent_by_uuid(agent)
                    .await
                    .with_context(|| format!("no agent named '{agent}'"))?,
            };
            store.revoke_agent(found.id, &Actor::system()).await?;
            println!(
                "agent {} ({}) revoked; live sessions close within seconds",
                found.name, found.uuid
            );
            store.close().await;
            Ok(())
        }
        Command::Dev {
            dir,
            playbook,
            ansible_playbook,
            once,
            fresh,
            api_listen,
        } => {
            let filter = tracing_subscriber::EnvFilter::try_from_env("OUTPOST_LOG")
                .unwrap_or_else(|_| "warn".into());
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .init();
            let opts = dev::DevOptions {
                dir,
                playbook: playbook.as_deref(),
                ansible: ansible_playbook,
                once: *once,
                fresh: *fresh,
                api_listen: *api_listen,
            };
            if !dev::run(opts).await? {
                bail!("the quick start's job did not succeed");
            }
            Ok(())
        }
    }
}

async fn bundle(cli: &Cli, settings: &Settings, args: &BundleArgs) -> anyhow::Result<()> {
    use std::io::Write;

    let pki = pki::load(&PkiPaths::new(&settings.data_dir))?;
    let origin = outpost_controller::bundle::Origin {
        names: pki.server_names(),
        agent_port: args.agent_port.unwrap_or(settings.listen.port()),
        enroll_port: args.enroll_port.unwrap_or(settings.enroll_listen.port()),
        ca_fingerprint: pki.ca.fingerprint(),
        agent_binary: args
            .agent_binary
            .clone()
            .or_else(|| settings.agent_binary.clone()),
    };
    outpost_controller::bundle::check_name(&args.name)?;
    let to_stdout = args.output.as_deref() == Some(std::path::Path::new("-"));
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("outpost-agent-{}.tar.gz", args.name)));
    if !to_stdout && !args.force && output.exists() {
        bail!(
            "{} exists (another bundle, perhaps with an unused token): pass --force to replace it, or -o another file",
            output.display()
        );
    }
    let store = cli.store(settings).await?;
    store.migrate_up().await?;
    let request = outpost_controller::bundle::BundleRequest {
        name: args.name.clone(),
        labels: args.labels.clone(),
        hosts: args.addresses.clone(),
        ttl: chrono::Duration::hours(i64::try_from(args.ttl_hours).unwrap_or(24)),
    };
    let bundle =
        outpost_controller::bundle::prepare(&store, &origin, request, &Actor::system()).await?;
    let token_id = bundle.token_id;
    let written = if to_stdout {
        let stdout = std::io::stdout().lock();
        bundle
            .write(std::io::BufWriter::new(stdout))
            .and_then(|mut w| Ok(w.flush()?))
            .map_err(anyhow::Error::from)
    } else {
        write_private_file(&output, |f| bundle.write(f).map(|_| ()))
    };
    if let Err(e) = written {
        // A token nobody can have must not stay valid.
        let _ = store
            .delete_enrollment_token(token_id, &Actor::system())
            .await;
        store.close().await;
        return Err(e);
    }
    eprintln!("{}", bundle.summary());
    if !to_stdout {
        eprintln!(
            "wrote {} (mode 0600: it holds the token). On a machine with SSH to the bastion:\n  tar xzf {} && cd {} && ansible-playbook -i BASTION, install.yml",
            output.display(),
            output.display(),
            bundle.dir_name()
        );
    }
    store.close().await;
    Ok(())
}

/// Writes `path` through a 0600 temporary file beside it, renamed into place when complete.
fn write_private_file(
    path: &std::path::Path,
    write: impl FnOnce(std::fs::File) -> Result<(), outpost_controller::bundle::BundleError>,
) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("partial");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    if let Err(e) = write(file) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.into());
    }
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot move the bundle to {}", path.display()))
}

async fn init(cli: &Cli, settings: &Settings, args: &InitArgs) -> anyhow::Result<()> {
    let paths = PkiPaths::new(&settings.data_dir);
    let mut names = args.names.clone();
    if names.is_empty() {
        names = vec!["localhost".into(), "127.0.0.1".into()];
        if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            let h = h.trim().to_owned();
            if !h.is_empty() && !names.contains(&h) {
                names.push(h);
            }
        }
    }
    let password = std::env::var(&args.admin_password_env).ok();
    let store = cli.store(settings).await?;
    store.migrate_up().await?;
    let pki = pki::init(
        &paths,
        &names,
        Duration::from_secs(10 * 365 * 86400),
        Duration::from_secs(365 * 86400),
        args.force,
    )?;
    println!(
        "CA and server certificate written to {} (names: {})",
        paths.dir.display(),
        names.join(", ")
    );
    println!("CA fingerprint (sha256): {}", pki.ca.fingerprint());
    match password {
        Some(pw) => {
            let user = store
                .create_user(
                    &NewUser {
                        username: args.admin_user.clone(),
                        email: args.admin_email.clone(),
                        password: pw,
                        role: Role::Admin,
                        must_change_password: false,
                    },
                    &Actor::system(),
                )
                .await?;
            println!("admin account '{}' created", user.username);
        }
        None => println!(
            "no admin created: set {} to create the first admin",
            args.admin_password_env
        ),
    }
    store.close().await;
    Ok(())
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
