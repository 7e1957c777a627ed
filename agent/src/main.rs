//! `outpost-agent`: enrol once, then run as a service on a bastion host.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use outpost_agent::enroll::{self, EnrollRequestArgs};
use outpost_agent::jobs::JobTable;
use outpost_agent::runner::RunnerConfig;
use outpost_agent::session::{self, Agent, AgentConfig};
use outpost_agent::state::StateDir;
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
    /// to --drain-timeout, cancel the rest, deliver their output, exit 0).
    Run(RunArgs),
}

#[derive(Args)]
struct EnrollArgs {
    /// The controller's enrolment address, HOST:PORT (port 7444 by default on the controller).
    #[arg(long)]
    controller: String,
    /// The one-line token from `outpost-controller token` / `outpost agent token`.
    #[arg(long, env = "OUTPOST_ENROLL_TOKEN", hide_env_values = true)]
    token: String,
    /// A label to ask for, e.g. dc=fra1 (repeatable); the token's labels win on conflict.
    #[arg(long = "label", value_parser = parse_label)]
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
    /// How many jobs run at once.
    #[arg(long, env = "OUTPOST_AGENT_CAPACITY", default_value_t = 4)]
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
    /// Log as JSON lines instead of text.
    #[arg(long, env = "OUTPOST_LOG_JSON")]
    log_json: bool,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!(
            "'{s}' is not a label; write key=value, e.g. dc=fra1"
        )),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

async fn ansible_version(bin: &PathBuf) -> String {
    let probe = tokio::process::Command::new(bin)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output();
    match tokio::time::timeout(Duration::from_secs(30), probe).await {
        Ok(Ok(out)) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_owned(),
        Ok(Ok(out)) => format!("unavailable: {} exited with {}", bin.display(), out.status),
        Ok(Err(e)) => format!("unavailable: {}: {e}", bin.display()),
        Err(_) => format!("unavailable: {} --version timed out", bin.display()),
    }
}

async fn run(state: StateDir, args: RunArgs) -> anyhow::Result<ExitCode> {
    let identity = state.load_identity()?;
    state.create()?;
    let table = JobTable::default();
    let recovered = table
        .recover(&state.spool_dir())
        .context("cannot read the spool")?;
    if recovered > 0 {
        tracing::info!(
            jobs = recovered,
            "spooled jobs taken up from the previous run"
        );
    }
    let controllers = if args.controllers.is_empty() {
        identity.controllers.clone()
    } else {
        args.controllers.clone()
    };
    anyhow::ensure!(
        !controllers.is_empty(),
        "no controller address: pass --controller HOST:PORT"
    );
    let ansible_version = ansible_version(&args.ansible_playbook).await;
    if ansible_version.starts_with("unavailable") {
        tracing::warn!(%ansible_version, "ansible-playbook does not run here; jobs will fail until it does");
    }
    let agent = Arc::new(Agent {
        cfg: AgentConfig {
            controllers,
            capacity: args.capacity.max(1),
            labels: identity.labels.clone(),
            runner: Arc::new(RunnerConfig {
                ansible_playbook: args.ansible_playbook.clone(),
                work_root: state.work_dir(),
                host_key_checking: args.host_key_checking,
                kill_grace: Duration::from_secs(args.kill_grace_secs),
            }),
            timers: outpost_protocol::tls::Timers::default(),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(args.max_backoff_secs.max(1)),
        },
        identity,
        state,
        table,
        ansible_version,
        hostname: hostname(),
        draining: CancellationToken::new(),
        shutdown: CancellationToken::new(),
    });
    tracing::info!(agent = %agent.identity.name, uuid = %agent.identity.uuid, controllers = ?agent.cfg.controllers, "agent starting");
    let session = tokio::spawn(session::run(agent.clone()));
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut session = session;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        res = &mut session => {
            return Ok(match res {
                Ok(Err(fatal)) => {
                    tracing::error!("{fatal}");
                    ExitCode::from(EXIT_REFUSED)
                }
                _ => ExitCode::SUCCESS,
            });
        }
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    drain(&agent, &args).await;
    agent.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), session).await;
    tracing::info!(left_in_spool = agent.table.len(), "agent stopped");
    Ok(ExitCode::SUCCESS)
}

/// Stop taking work, let running jobs finish (up to the drain timeout), cancel the rest, then
/// give the controller a moment to acknowledge what is spooled.
async fn drain(agent: &Agent, args: &RunArgs) {
    agent.draining.cancel();
    tracing::info!(running = agent.table.running(), "draining");
    let all_ended = async {
        for e in agent.table.all() {
            e.ended().await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(args.drain_timeout_secs), all_ended)
        .await
        .is_err()
    {
        tracing::warn!("drain timeout: cancelling the jobs still running");
        for e in agent.table.all() {
            e.cancel.cancel();
        }
        let grace = Duration::from_secs(args.kill_grace_secs + 5);
        let _ = tokio::time::timeout(grace, async {
            for e in agent.table.all() {
                e.ended().await;
            }
        })
        .await;
    }
    let flush = tokio::time::Instant::now() + Duration::from_secs(args.flush_timeout_secs);
    while !agent.table.is_empty() && tokio::time::Instant::now() < flush {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let state = StateDir::new(&cli.state_dir);
    let result = match cli.command {
        Command::Enroll(a) => {
            let args = EnrollRequestArgs {
                controller: a.controller,
                token: a.token,
                labels: a.labels,
                connect: a.connect,
                hostname: hostname(),
                force: a.force,
            };
            enroll::enroll(&state, &args)
                .await
                .map_err(anyhow::Error::from)
                .map(|id| {
                    println!(
                        "enrolled as '{}' ({}); labels: {:?}; controllers: {}",
                        id.name,
                        id.uuid,
                        id.labels,
                        id.controllers.join(", ")
                    );
                    ExitCode::SUCCESS
                })
        }
        Command::Run(a) => {
            let filter = tracing_subscriber::EnvFilter::try_from_env("OUTPOST_LOG")
                .unwrap_or_else(|_| "info".into());
            let builder = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr);
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
