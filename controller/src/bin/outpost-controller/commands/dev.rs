//! `outpost-controller dev`: the quick start, a local controller that stays up (like `vault
//! server -dev`). In one process and one directory: a controller on the embedded SQLite store
//! with its own PKI, one agent enrolled over the real enrolment endpoint and connected over
//! mutual-TLS QUIC on loopback, this host as a server (local connection), and a playbook run end
//! to end with its output followed live; then the API address, the admin password and the
//! `outpost login` command, until Ctrl-C. The directory is reused on the next run (`--fresh`
//! starts over); a directory it did not create is never deleted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use outpost_agent::enroll::EnrollRequestArgs;
use outpost_agent::service::ServiceOptions;
use outpost_agent::state::StateDir;
use outpost_controller::config::Settings;
use outpost_controller::model::{JobStatus, ProjectKind, Role};
use outpost_controller::pki::{self, PkiPaths};
use outpost_controller::store::agents::NewEnrollmentToken;
use outpost_controller::store::audit::Actor;
use outpost_controller::store::jobs::NewJob;
use outpost_controller::store::projects::NewProject;
use outpost_controller::store::servers::NewServer;
use outpost_controller::store::users::NewUser;
use outpost_controller::{project, server, Store};
use outpost_protocol::token::EnrollToken;
use tokio_util::sync::CancellationToken;

/// The quick start's playbook, used when none is given.
const DEFAULT_PLAYBOOK: &str = include_str!("../../../../../examples/ping.yml");

/// Marks a directory as made by `dev`: only such a directory is ever cleared.
const MARKER: &str = ".outpost-dev";

#[derive(clap::Args)]
pub struct Args {
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
    // A busy port falls back to one the kernel picks.
    #[arg(long, default_value = "127.0.0.1:8443")]
    api_listen: std::net::SocketAddr,
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
}

/// Runs the quick start; an error if its job did not succeed.
pub async fn run(args: &Args) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("OUTPOST_LOG")
        .unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if !quickstart(args).await? {
        bail!("the quick start's job did not succeed");
    }
    Ok(())
}

/// Makes (or reuses, or clears) the dev directory. Returns whether it is new.
fn prepare_dir(dir: &Path, fresh: bool) -> anyhow::Result<bool> {
    let marked = dir.join(MARKER).exists();
    let empty = std::fs::read_dir(dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true);
    if dir.exists() && !marked && !empty {
        bail!(
            "{} exists and was not made by `outpost-controller dev`: choose another --dir",
            dir.display()
        );
    }
    if fresh && marked {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    let new = !dir.join(MARKER).exists();
    if new {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join(MARKER), "made by outpost-controller dev\n")?;
    }
    Ok(new)
}

/// The admin password of this dev directory: made once, kept mode 0600.
fn admin_password(dir: &Path) -> anyhow::Result<(String, bool)> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("admin-password");
    if let Ok(p) = std::fs::read_to_string(&path) {
        return Ok((p.trim().to_owned(), false));
    }
    let password = EnrollToken::generate("x").secret[..24].to_owned(); // random, printable
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    writeln!(f, "{password}")?;
    Ok((password, true))
}

/// Whether the job succeeded.
async fn quickstart(o: &Args) -> anyhow::Result<bool> {
    let new = prepare_dir(&o.dir, o.fresh)?;
    let dir = o.dir.canonicalize()?;
    let (playbook, ansible) = (o.playbook.as_deref(), &o.ansible_playbook);
    println!(
        "==> dev environment in {} ({})",
        dir.display(),
        if new {
            "new"
        } else {
            "reused; --fresh starts over"
        }
    );

    let mut settings = Settings::new(
        format!("sqlite://{}", dir.join("outpost.db").display()),
        dir.clone(),
    );
    settings.listen = "127.0.0.1:0".parse()?;
    settings.enroll_listen = "127.0.0.1:0".parse()?;
    settings.api_listen = match std::net::TcpListener::bind(o.api_listen) {
        Ok(_) => o.api_listen,
        Err(_) => {
            println!(
                "==> {} is busy: the API takes a free port instead",
                o.api_listen
            );
            "127.0.0.1:0".parse()?
        }
    };
    settings.sweep_interval = Duration::from_millis(200);
    settings.controller_id = "dev".into();

    let paths = PkiPaths::new(&dir);
    let pki = if paths.exists() {
        pki::load(&paths)?
    } else {
        pki::init(
            &paths,
            &["localhost".into(), "127.0.0.1".into()],
            Duration::from_secs(365 * 86400),
            Duration::from_secs(30 * 86400),
            false,
        )?
    };
    let store = Store::connect(&settings.database_url, &settings.pool).await?;
    store.migrate_up().await?;
    let (password, made) = admin_password(&dir)?;
    let admin = match store.get_user_by_username("admin").await {
        Ok(u) => u,
        Err(_) => {
            store
                .create_user(
                    &NewUser {
                        username: "admin".into(),
                        email: "admin@localhost.localdomain".into(),
                        password: password.clone(),
                        role: Role::Admin,
                        must_change_password: false,
                    },
                    &Actor::system(),
                )
                .await?
        }
    };
    println!(
        "==> PKI, SQLite store and admin account {}",
        if made { "made" } else { "reused" }
    );

    // The controller, in this process.
    let stop = CancellationToken::new();
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let controller = tokio::spawn(server::serve(settings.clone(), stop.clone(), move |b| {
        let _ = bound_tx.send(b);
    }));
    let bound = bound_rx.await.context("the controller did not start")?;
    println!(
        "==> controller listening: agents {} (QUIC, mTLS), enrolment {}, API https://{}",
        bound.agents, bound.enroll, bound.api
    );

    // One agent, enrolled the way a real one is: token, CSR, certificate (once per directory).
    let agent_state = StateDir::new(dir.join("agent"));
    let enrolled =
        store.get_agent_by_name("local-agent").await.is_ok() && agent_state.cert_file().exists();
    if !enrolled {
        let token = EnrollToken::generate(&pki.ca.fingerprint());
        store
            .create_enrollment_token(
                &NewEnrollmentToken {
                    secret_hash: EnrollToken::secret_hash(&token.secret),
                    name: "local-agent".into(),
                    labels: serde_json::json!({"dc": "local"}),
                    expires_at: chrono::Utc::now() + chrono::Duration::minutes(10),
                },
                &Actor::user(admin.id),
            )
            .await?;
        let identity = outpost_agent::enroll::enroll(
            &agent_state,
            &EnrollRequestArgs {
                controller: bound.enroll.to_string(),
                token: token.encode(),
                labels: vec![],
                connect: vec![bound.agents.to_string()],
                hostname: "localhost".into(),
                force: false,
            },
        )
        .await?;
        println!(
            "==> agent enrolled as '{}' ({})",
            identity.name, identity.uuid
        );
    }
    let agent_stop = CancellationToken::new();
    let opts = ServiceOptions {
        // This run's address: the one stored at enrolment may be an earlier run's port.
        controllers: vec![bound.agents.to_string()],
        ansible_playbook: ansible.to_path_buf(),
        host_key_checking: false,
        ..ServiceOptions::default()
    };
    let agent = tokio::spawn(outpost_agent::service::run(
        agent_state,
        opts,
        agent_stop.clone(),
        || {},
    ));

    // This host as a server, reached with a local connection; the playbook from a file.
    let mut local = NewServer::new("localhost", "127.0.0.1", std::env::consts::OS);
    local.tags = Some(serde_json::json!({"dc": "local"}));
    local.environment = Some("development".into());
    local.host_vars = Some(
        serde_json::json!({"ansible_connection": "local", "ansible_python_interpreter": python()}),
    );
    let server_row = match store.get_server_by_hostname("localhost").await {
        Ok(s) => s,
        Err(_) => store.create_server(&local, &Actor::user(admin.id)).await?,
    };
    let content = match playbook {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?
        }
        None => DEFAULT_PLAYBOOK.to_owned(),
    };
    // The quick start's playbook is a one-file project, as `outpost playbook add` makes one:
    // each run's content is a revision of it (a directory of an older release had a row
    // outside any project, which the controller adopted when it started above).
    let actor = Actor::user(admin.id);
    let project = match store.get_project_by_name("quickstart").await {
        Ok(p) => p,
        Err(_) => {
            store
                .create_project(
                    &NewProject {
                        name: "quickstart".into(),
                        description: Some("the dev quick start".into()),
                        kind: ProjectKind::File,
                        git_url: None,
                        git_ref: None,
                        git_key_path: None,
                        git_credential_id: None,
                        inventory_path: None,
                    },
                    &actor,
                )
                .await?
        }
    };
    if !store
        .claim_sync(project.id, settings.project_sync_time_limit)
        .await?
    {
        bail!("the quickstart project is being changed by another process; try again");
    }
    let tree = project::single_file_tree(&settings.data_dir, content.as_bytes())?;
    let sync = project::SyncSettings {
        data_dir: settings.data_dir.clone(),
        time_limit: settings.project_sync_time_limit,
        git_key: None,
    };
    project::sync(&store, &sync, &project, project::Source::Tree(tree), &actor).await?;
    let pb = store
        .project_playbook(project.id, project::SINGLE_PLAYBOOK)
        .await?;
    let job = store
        .create_jobs(
            &[NewJob {
                playbook_id: pb.id,
                server_id: server_row.id,
                user_id: admin.id,
                extra_vars: None,
                extra_vars_templated: false,
                run_options: None,
                revision_id: None,
                credential_ids: Vec::new(),
                job_uuid: outpost_controller::model::JobUuid::new_v4(),
                template_id: None,
                time_limit_secs: None,
                secret_vars: None,
                schedule_id: None,
                wave: 0,
            }],
            &Actor::user(admin.id),
        )
        .await?
        .remove(0);
    println!(
        "==> job {} launched: playbook 'quickstart' on localhost\n",
        job.job_id
    );

    // Follow the output until the job is final and every line is in.
    let mut after = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    let final_job = loop {
        for line in store.read_log_lines(job.id, after, 1000).await? {
            println!("  {:>5} | {}", line.line_number, line.content);
            after = line.line_number;
        }
        let j = store.get_job(job.id).await?;
        if j.status.is_final() && store.log_extent(job.id).await?.0 <= after {
            break j;
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the job did not finish within 5 minutes (status {})",
                j.status
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!();
    match final_job.status {
        JobStatus::Success => println!("==> job succeeded: {after} lines stored, in order"),
        other => println!(
            "==> job ended {other}: {}",
            final_job.error_message.clone().unwrap_or_default()
        ),
    }
    let ok = final_job.status == JobStatus::Success;
    if !o.once {
        let api = format!("https://{}", bound.api);
        let ca = dir.join("pki").join("ca.pem");
        println!(
            "\n==> Outpost is running. Web UI: {api}/ (sign in as admin; the certificate is from {}), API: {api}\n    admin password: {password} (kept in {})\n    \
             log in with the CLI:\n      OUTPOST_PASSWORD='{password}' outpost login {api} --ca-file {} -u admin\n    \
             or trust it by fingerprint: --ca-fingerprint {}\n    then e.g. `outpost job run quickstart --server localhost --follow`.\n    \
             Ctrl-C stops it; the next `dev` reuses this directory.",
            dir.join("pki/ca.pem").display(),
            dir.join("admin-password").display(),
            ca.display(),
            pki.ca.fingerprint(),
        );
        wait_for_stop().await;
        println!("==> stopping");
    }
    agent_stop.cancel();
    let _ = agent.await;
    stop.cancel();
    let _ = controller.await;
    println!(
        "==> stopped. Everything is in {}; `dev` reuses it, `dev --fresh` starts over.",
        dir.display()
    );
    Ok(ok)
}

/// Ctrl-C or SIGTERM.
async fn wait_for_stop() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}

/// The Python that runs ansible here, so the local connection needs no interpreter discovery.
fn python() -> String {
    std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/usr/bin/python3".into())
}
