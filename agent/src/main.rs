//! `outpost-agent`: enrol once, then run as a service on a bastion host.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use outpost_agent::enroll::{self, EnrollRequestArgs};
use outpost_agent::service::{self, ServiceError, ServiceOptions};
use outpost_agent::state::StateDir;
use outpost_agent::status;
use tokio_util::sync::CancellationToken;

/// Exit status when the controller refuses this agent for good (revoked, unknown): the systemd
/// unit does not restart on it.
const EXIT_REFUSED: u8 = 78;

/// The Outpost agent, for bastion hosts: enrol once with a one-time token, then run as a
/// service that dials out to the controller (no inbound port needed) and runs the Ansible jobs
/// it is given against the servers near it. Output is kept on disk until the controller has it.
#[derive(Parser)]
#[command(name = "outpost-agent", version)]
struct Cli {
    /// Where the agent keeps its key, certificates, settings and job spools.
    #[arg(
        long,
        env = "OUTPOST_AGENT_STATE_DIR",
        global = true,
        default_value = "/var/lib/outpost-agent"
    )]
    state_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate this agent's key, send a certificate request with the one-time token, and store
    /// the signed certificate. The private key never leaves this host.
    Enroll(EnrollArgs),
    /// Run the agent service until SIGTERM (then: take no new work, let running jobs finish up
    /// to --drain-timeout-secs, cancel the rest, deliver their output, exit 0).
    Run(RunArgs),
    /// Check what this bastion needs, one line each: ansible-playbook and its version, the
    /// state directory's owner and modes, the certificate's expiry, each controller reachable
    /// over UDP with the handshake accepted, the SSH keys readable. Exits 1 if anything fails.
    Doctor(DoctorArgs),
    /// Say whether the running service is online, as the controller last told it: "online"
    /// (exit 0) only once the controller has welcomed this agent; "connecting" with the last
    /// failure, or "not running" (exit 1). With --wait, keep looking until online.
    Status {
        /// Seconds to wait for the agent to come online.
        #[arg(long, value_name = "SECS", default_value_t = 0)]
        wait: u64,
    },
}

#[derive(Args)]
struct DoctorArgs {
    /// Controller agent endpoint(s) to try, HOST:PORT [default: those stored at enrolment].
    #[arg(
        long = "controller",
        env = "OUTPOST_CONTROLLERS",
        value_delimiter = ','
    )]
    controllers: Vec<String>,
    /// The ansible-playbook the service runs.
    #[arg(
        long,
        env = "OUTPOST_ANSIBLE_PLAYBOOK",
        default_value = "ansible-playbook"
    )]
    ansible_playbook: PathBuf,
    /// A private key ansible logs in to servers with (repeatable).
    #[arg(long = "ssh-key")]
    ssh_keys: Vec<PathBuf>,
}

#[derive(Args)]
struct EnrollArgs {
    /// The controller's enrolment address, HOST:PORT (port 7444 by default on the controller).
    #[arg(long)]
    controller: String,
    /// The one-line token from `outpost agent token` / `outpost-controller token`. Prefer
    /// --token-file or the environment: a command line shows in `ps` and shell history.
    #[arg(
        long,
        env = "OUTPOST_ENROLL_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    token: Option<String>,
    /// A file holding the token (e.g. mode 0600, deleted after enrolling).
    #[arg(long)]
    token_file: Option<std::path::PathBuf>,
    /// A label to repeat from the token, e.g. dc=fra1 (repeatable): the token's labels are the
    /// agent's, and asking for any other is refused.
    #[arg(long = "label", value_parser = outpost_protocol::message::parse_label)]
    labels: Vec<(String, String)>,
    /// Agent endpoint(s) of the controller(s) to store, HOST:PORT (repeatable)
    /// [default: the enrolment host on port 7443].
    #[arg(long = "connect")]
    connect: Vec<String>,
    /// Replace an existing enrolment.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct RunArgs {
    /// Controller agent endpoint(s), HOST:PORT, tried in turn (repeatable)
    /// [default: those stored at enrolment].
    #[arg(
        long = "controller",
        env = "OUTPOST_CONTROLLERS",
        value_delimiter = ','
    )]
    controllers: Vec<String>,
    /// How many jobs run at once (1 to 100).
    #[arg(long, env = "OUTPOST_AGENT_CAPACITY", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=outpost_protocol::MAX_AGENT_CAPACITY as i64))]
    capacity: u32,
    /// The ansible-playbook to run.
    #[arg(
        long,
        env = "OUTPOST_ANSIBLE_PLAYBOOK",
        default_value = "ansible-playbook"
    )]
    ansible_playbook: PathBuf,
    /// Check SSH host keys of the servers (turn off only for throwaway labs).
    #[arg(long, env = "OUTPOST_HOST_KEY_CHECKING", default_value_t = true, action = clap::ArgAction::Set)]
    host_key_checking: bool,
    /// Seconds between SIGTERM and SIGKILL when a job is cancelled or times out.
    #[arg(long, default_value_t = 10)]
    kill_grace_secs: u64,
    /// Seconds running jobs may take to finish after SIGTERM before they are cancelled.
    #[arg(long, env = "OUTPOST_DRAIN_TIMEOUT_SECS", default_value_t = 300)]
    drain_timeout_secs: u64,
    /// Seconds to wait, at shutdown, for the controller to acknowledge spooled output (what is
    /// left stays on disk for the next start).
    #[arg(long, default_value_t = 15)]
    flush_timeout_secs: u64,
    /// Longest wait between reconnect attempts, in seconds.
    #[arg(long, default_value_t = 30)]
    max_backoff_secs: u64,
    /// Milliseconds of silence after which the controller is considered gone; keep-alives go
    /// out at a third of it. Give it the controller's `idle_timeout_ms`: raising both eases a
    /// controller of tens of thousands of agents, which then notices a lost agent later.
    #[arg(long, env = "OUTPOST_IDLE_TIMEOUT_MS", default_value_t = 15_000)]
    idle_timeout_ms: u64,
    /// The most disk the cache of project revisions may take, in bytes: each revision a job
    /// runs is unpacked once under <state-dir>/revisions/ and kept for the next job; the least
    /// recently used go when room is needed (never one a running job uses).
    #[arg(long, env = "OUTPOST_REVISION_CACHE_BYTES", default_value_t = outpost_agent::revisions::DEFAULT_CACHE_BYTES)]
    revision_cache_bytes: u64,
    /// Where the credentials a job is given (SSH key, become and vault passwords) are written
    /// while it runs, one 0700 directory per job, files 0600, removed when the job ends and
    /// at the next start after a crash. It must be a directory of the agent's user, mode 0700
    /// (created so if missing), not a symbolic link, used by this agent alone, and best on a
    /// tmpfs so secrets never reach a disk [default: $RUNTIME_DIRECTORY/secrets under systemd
    /// (`RuntimeDirectory=`), else /dev/shm/outpost-agent-<uid>/<agent uuid> when /dev/shm is
    /// a writable tmpfs, else <state-dir>/secrets, on disk, with a warning].
    #[arg(long, env = "OUTPOST_SECRETS_DIR", value_name = "DIR")]
    secrets_dir: Option<PathBuf>,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "OUTPOST_LOG_JSON")]
    log_json: bool,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

async fn run(state: StateDir, a: RunArgs) -> anyhow::Result<ExitCode> {
    let opts = ServiceOptions {
        controllers: a.controllers,
        capacity: a.capacity,
        ansible_playbook: a.ansible_playbook,
        host_key_checking: a.host_key_checking,
        kill_grace: Duration::from_secs(a.kill_grace_secs),
        drain_timeout: Duration::from_secs(a.drain_timeout_secs),
        flush_timeout: Duration::from_secs(a.flush_timeout_secs),
        max_backoff: Duration::from_secs(a.max_backoff_secs),
        idle_timeout: Duration::from_millis(a.idle_timeout_ms.max(500)),
        revision_cache_bytes: a.revision_cache_bytes,
        secrets_dir: a.secrets_dir,
    };
    let stop = CancellationToken::new();
    let signalled = stop.clone();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        signalled.cancel();
    });
    let ready = || {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    };
    match service::run(state, opts, stop, ready).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(ServiceError::Refused(fatal)) => {
            tracing::error!("{fatal}");
            Ok(ExitCode::from(EXIT_REFUSED))
        }
        Err(e) => Err(e.into()),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let state = StateDir::new(&cli.state_dir);
    let result = match cli.command {
        Command::Enroll(a) => {
            if std::env::args().any(|x| x == "--token" || x.starts_with("--token=")) {
                eprintln!("warning: a token on the command line shows in `ps` and shell history; use --token-file or OUTPOST_ENROLL_TOKEN");
            }
            let token = match (a.token, &a.token_file) {
                (Some(t), _) => t,
                (None, Some(f)) => match std::fs::read_to_string(f) {
                    Ok(t) => t.trim().to_owned(),
                    Err(e) => {
                        eprintln!("error: cannot read the token file {}: {e}", f.display());
                        return ExitCode::from(2);
                    }
                },
                (None, None) => {
                    eprintln!("error: give the enrolment token: --token-file FILE or OUTPOST_ENROLL_TOKEN");
                    return ExitCode::from(2);
                }
            };
            let args = EnrollRequestArgs {
                controller: a.controller,
                token,
                labels: a.labels,
                connect: a.connect,
                hostname: hostname(),
                force: a.force,
            };
            enroll::enroll(&state, &args)
                .await
                .map_err(anyhow::Error::from)
                .map(|id| {
                    let labels = if id.labels.is_empty() {
                        "none".to_owned()
                    } else {
                        id.labels
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(",")
                    };
                    println!(
                        "enrolled as '{}' ({}); labels: {labels}; controllers: {}",
                        id.name,
                        id.uuid,
                        id.controllers.join(", ")
                    );
                    ExitCode::SUCCESS
                })
        }
        Command::Doctor(a) => {
            let opts = outpost_agent::doctor::DoctorOptions {
                ansible_playbook: a.ansible_playbook,
                controllers: a.controllers,
                ssh_keys: a.ssh_keys,
            };
            let findings = outpost_agent::doctor::examine(&state, &opts).await;
            for f in &findings {
                println!("{f}");
            }
            let failed = findings.iter().filter(|f| !f.ok).count();
            if failed > 0 {
                println!("{failed} problem(s) found");
                Ok(ExitCode::FAILURE)
            } else {
                println!("all {} checks passed", findings.len());
                Ok(ExitCode::SUCCESS)
            }
        }
        Command::Status { wait } => {
            if !state.is_enrolled() {
                println!(
                    "not enrolled: no certificate in {} (run `outpost-agent enroll` first)",
                    cli.state_dir.display()
                );
                return ExitCode::FAILURE;
            }
            match status::watch(&state.status_file(), Duration::from_secs(wait)).await {
                Ok(v) => {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0);
                    println!("{}", v.describe(now));
                    Ok(if v.is_online() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    })
                }
                Err(e) => Err(e.into()),
            }
        }
        Command::Run(a) => {
            let filter = tracing_subscriber::EnvFilter::try_from_env("OUTPOST_LOG")
                .unwrap_or_else(|_| "info".into());
            let builder = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
            if a.log_json {
                builder.json().init();
            } else {
                builder.init();
            }
            run(state, a).await
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
