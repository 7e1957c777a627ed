//! `outpost-controller dev`: the quick start. In one process and one directory: a controller on
//! the embedded SQLite store with a fresh PKI, one agent enrolled over the real enrolment
//! endpoint and connected over mutual-TLS QUIC on loopback, this host as a server (local
//! connection), and a playbook run end to end with its output followed live.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use outpost_agent::enroll::EnrollRequestArgs;
use outpost_agent::service::ServiceOptions;
use outpost_agent::state::StateDir;
use outpost_controller::config::Settings;
use outpost_controller::model::{JobStatus, Role};
use outpost_controller::pki::{self, PkiPaths};
use outpost_controller::store::agents::NewEnrollmentToken;
use outpost_controller::store::audit::Actor;
use outpost_controller::store::jobs::NewJob;
use outpost_controller::store::playbooks::NewPlaybook;
use outpost_controller::store::servers::NewServer;
use outpost_controller::store::users::NewUser;
use outpost_controller::{server, Store};
use outpost_protocol::token::EnrollToken;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

/// The quick start's playbook, used when none is given.
const DEFAULT_PLAYBOOK: &str = include_str!("../../../../examples/ping.yml");

pub async fn run(dir: &Path, playbook: Option<&Path>, ansible: &Path) -> anyhow::Result<bool> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    let dir = dir.canonicalize()?;
    println!("==> dev environment in {}", dir.display());

    let mut settings = Settings::new(
        format!("sqlite://{}", dir.join("outpost.db").display()),
        dir.clone(),
    );
    settings.listen = "127.0.0.1:0".parse()?;
    settings.enroll_listen = "127.0.0.1:0".parse()?;
    settings.api_listen = "127.0.0.1:0".parse()?;
    settings.sweep_interval = Duration::from_millis(200);
    settings.controller_id = "dev".into();

    let pki = pki::init(
        &PkiPaths::new(&dir),
        &["localhost".into(), "127.0.0.1".into()],
        Duration::from_secs(365 * 86400),
        Duration::from_secs(30 * 86400),
        false,
    )?;
    let store = Store::connect(&settings.database_url, &settings.pool).await?;
    store.migrate_up().await?;
    let password = EnrollToken::generate("x").secret; // 256 random bits, printable
    let admin = store
        .create_user(
            &NewUser {
                username: "admin".into(),
                email: "admin@localhost.localdomain".into(),
                password: password[..24].to_owned(),
                role: Role::Admin,
                must_change_password: false,
            },
            &Actor::system(),
        )
        .await?;
    println!(
        "==> PKI, SQLite store and admin account ready (admin password: {})",
        &password[..24]
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

    // One agent, enrolled the way a real one is: token, CSR, certificate.
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
    let agent_state = StateDir::new(dir.join("agent"));
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
    let agent_stop = CancellationToken::new();
    let opts = ServiceOptions {
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
    let server_row = store.create_server(&local, &Actor::user(admin.id)).await?;
    let content = match playbook {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?
        }
        None => DEFAULT_PLAYBOOK.to_owned(),
    };
    let pb_dir = dir.join("playbooks");
    std::fs::create_dir_all(&pb_dir)?;
    let pb_path: PathBuf = pb_dir.join("quickstart.yml");
    std::fs::write(&pb_path, &content)?;
    let pb = store
        .create_playbook(
            &NewPlaybook {
                name: "quickstart".into(),
                description: Some("the dev quick start".into()),
                file_path: pb_path.display().to_string(),
                file_hash: hex::encode(Sha256::digest(content.as_bytes())),
                tags: None,
                variables: None,
            },
            &Actor::user(admin.id),
        )
        .await?;
    let job = store
        .create_jobs(
            &[NewJob {
                playbook_id: pb.id,
                server_id: server_row.id,
                user_id: admin.id,
                extra_vars: None,
                run_options: None,
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
    agent_stop.cancel();
    let _ = agent.await;
    stop.cancel();
    let _ = controller.await;
    println!(
        "==> stopped. Everything is in {}; run again for a fresh start.",
        dir.display()
    );
    Ok(final_job.status == JobStatus::Success)
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
