//! `outpost-agent run` as a library call: take up the spool, connect, work, and on `stop`
//! drain (no new work, running jobs finish up to the drain timeout, the rest are cancelled,
//! spooled output is handed over while the controller is reachable).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::jobs::JobTable;
use crate::runner::RunnerConfig;
use crate::secrets::{SecretsError, SecretsRoot};
use crate::session::{self, Agent, AgentConfig, Fatal};
use crate::state::{StateDir, StateError};

#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// Controller agent endpoints; empty: those stored at enrolment.
    pub controllers: Vec<String>,
    pub capacity: u32,
    pub ansible_playbook: PathBuf,
    pub host_key_checking: bool,
    pub kill_grace: Duration,
    pub drain_timeout: Duration,
    pub flush_timeout: Duration,
    pub max_backoff: Duration,
    pub idle_timeout: Duration,
    /// The bound of the revision cache, in bytes.
    pub revision_cache_bytes: u64,
    /// Where jobs' credentials are written while they run; None: chosen at start-up (see
    /// [`SecretsRoot::choose`]).
    pub secrets_dir: Option<PathBuf>,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions {
            controllers: Vec::new(),
            capacity: 4,
            ansible_playbook: PathBuf::from("ansible-playbook"),
            host_key_checking: true,
            kill_grace: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(300),
            flush_timeout: Duration::from_secs(15),
            max_backoff: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(15),
            revision_cache_bytes: crate::revisions::DEFAULT_CACHE_BYTES,
            secrets_dir: None,
        }
    }
}

#[derive(Debug, Error)]
pub enum ServiceError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot read the spool: {0}")]
    Spool(std::io::Error),
    #[error(transparent)]
    Revisions(#[from] crate::revisions::CacheError),
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error("cannot clear the work directories of interrupted jobs: {0}")]
    Work(std::io::Error),
    #[error("no controller address: pass --controller HOST:PORT")]
    NoController,
    #[error(transparent)]
    Refused(#[from] Fatal),
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// Why `ansible-playbook --version` gave no version.
#[derive(Debug, Error)]
pub(crate) enum ProbeError {
    #[error("{} exited with {status}", bin.display())]
    Exited {
        bin: PathBuf,
        status: std::process::ExitStatus,
    },
    #[error("{}: {source}", bin.display())]
    Spawn {
        bin: PathBuf,
        source: std::io::Error,
    },
    #[error("{} --version timed out", .0.display())]
    TimedOut(PathBuf),
}

/// `ansible-playbook --version`'s first line, or why it cannot be had.
pub(crate) async fn probe_ansible(bin: &Path) -> Result<String, ProbeError> {
    let probe = tokio::process::Command::new(bin)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output();
    match tokio::time::timeout(Duration::from_secs(30), probe).await {
        Ok(Ok(out)) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_owned()),
        Ok(Ok(out)) => Err(ProbeError::Exited {
            bin: bin.to_owned(),
            status: out.status,
        }),
        Ok(Err(source)) => Err(ProbeError::Spawn {
            bin: bin.to_owned(),
            source,
        }),
        Err(_) => Err(ProbeError::TimedOut(bin.to_owned())),
    }
}

/// Runs the agent until `stop` fires (then drains) or the controller refuses it for good.
/// `ready` is called once the spool is taken up and the session loop started.
pub async fn run(
    state: StateDir,
    opts: ServiceOptions,
    stop: CancellationToken,
    ready: impl FnOnce(),
) -> Result<(), ServiceError> {
    let identity = state.load_identity()?;
    state.create()?;
    // Before any job runs: what jobs of a killed agent left behind goes, secrets first.
    let secrets = SecretsRoot::choose(opts.secrets_dir.as_deref(), &state.root, identity.uuid)?;
    let swept = secrets.sweep()?;
    if swept > 0 {
        tracing::warn!(
            jobs = swept,
            "removed the credentials of jobs interrupted by the previous run"
        );
    }
    crate::runner::sweep_work(&state.work_dir()).map_err(ServiceError::Work)?;
    let table = JobTable::default();
    let recovered = table
        .recover(&state.spool_dir())
        .map_err(ServiceError::Spool)?;
    if recovered > 0 {
        tracing::info!(
            jobs = recovered,
            "spooled jobs taken up from the previous run"
        );
    }
    let cache =
        crate::revisions::RevisionCache::open(&state.revisions_dir(), opts.revision_cache_bytes)?;
    let (link, link_rx) = tokio::sync::watch::channel(None);
    let controllers = if opts.controllers.is_empty() {
        identity.controllers.clone()
    } else {
        opts.controllers.clone()
    };
    if controllers.is_empty() {
        return Err(ServiceError::NoController);
    }
    // The controller shows this string; "unavailable: why" tells operators what is wrong.
    let ansible_version = match probe_ansible(&opts.ansible_playbook).await {
        Ok(v) => v,
        Err(why) => {
            tracing::warn!(%why, "ansible-playbook does not run here; jobs will fail until it does");
            format!("unavailable: {why}")
        }
    };
    let agent = Arc::new(Agent {
        cfg: AgentConfig {
            controllers,
            capacity: opts.capacity.clamp(1, outpost_protocol::MAX_AGENT_CAPACITY),
            labels: identity.labels.clone(),
            runner: Arc::new(RunnerConfig {
                ansible_playbook: opts.ansible_playbook.clone(),
                work_root: state.work_dir(),
                host_key_checking: opts.host_key_checking,
                kill_grace: opts.kill_grace,
                secrets: secrets.clone(),
            }),
            timers: outpost_protocol::tls::Timers {
                idle_timeout: opts.idle_timeout,
                keep_alive: opts.idle_timeout / 3,
            },
            backoff_min: Duration::from_millis(500),
            backoff_max: opts.max_backoff.max(Duration::from_secs(1)),
        },
        identity,
        state,
        table,
        ansible_version,
        hostname: hostname(),
        draining: CancellationToken::new(),
        shutdown: CancellationToken::new(),
        early_cancels: Default::default(),
        revisions: Arc::new(crate::fetch::Revisions {
            cache,
            link: link_rx,
        }),
        link,
    });
    tracing::info!(agent = %agent.identity.name, uuid = %agent.identity.uuid, controllers = ?agent.cfg.controllers, "agent starting");
    let mut session = tokio::spawn(session::run(agent.clone()));
    ready();
    tokio::select! {
        _ = stop.cancelled() => {}
        res = &mut session => {
            return match res {
                Ok(Err(fatal)) => {
                    // Revoked: nothing it runs may go on. Stop every job before exiting.
                    for e in agent.table.all() {
                        e.stop.request("cancelled: this agent was revoked");
                    }
                    let all_ended = async {
                        for e in agent.table.all() {
                            e.ended().await;
                        }
                    };
                    let _ = tokio::time::timeout(opts.kill_grace + Duration::from_secs(5), all_ended).await;
                    for e in agent.table.all() {
                        crate::runner::kill_job(e.job, None);
                    }
                    Err(fatal.into())
                }
                _ => Ok(()),
            };
        }
    }
    drain(&agent, &opts).await;
    agent.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), session).await;
    if opts.secrets_dir.is_none() {
        // A root the agent chose is its own to tidy; only while empty (no job left in it).
        let _ = std::fs::remove_dir(secrets.path());
    }
    tracing::info!(left_in_spool = agent.table.len(), "agent stopped");
    Ok(())
}

async fn drain(agent: &Agent, opts: &ServiceOptions) {
    agent.draining.cancel();
    // An assignment that passed the draining check a moment ago may be making its spool: the
    // snapshots below must include it.
    agent.table.close().await;
    tracing::info!(running = agent.table.running(), "draining");
    let all_ended = || async {
        for e in agent.table.all() {
            e.ended().await;
        }
    };
    if tokio::time::timeout(opts.drain_timeout, all_ended())
        .await
        .is_err()
    {
        tracing::warn!("drain timeout: cancelling the jobs still running");
        for e in agent.table.all() {
            e.stop
                .request("cancelled: the agent shut down and the job outlasted its drain timeout");
        }
        let _ = tokio::time::timeout(opts.kill_grace + Duration::from_secs(5), all_ended()).await;
    }
    let flush = tokio::time::Instant::now() + opts.flush_timeout;
    while !agent.table.is_empty() && tokio::time::Instant::now() < flush {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
