//! What a test puts into the store directly (the API's job, later): an admin, servers reached
//! with a local connection, playbooks written to files, launched jobs; and waits on their state.

use std::path::PathBuf;
use std::time::Duration;

use outpost_controller::model::{Job, JobStatus, LogLine, Playbook, Role, Server, User};
use outpost_controller::store::audit::Actor;
use outpost_controller::store::jobs::NewJob;
use outpost_controller::store::playbooks::NewPlaybook;
use outpost_controller::store::servers::NewServer;
use outpost_controller::store::users::NewUser;
use outpost_controller::{PoolConfig, Store};
use sha2::{Digest, Sha256};

/// A playbook that says so, then sleeps two minutes in a shell whose command line carries
/// `mark` (see [`crate::unique_mark`]), so a test can tell whether its ansible still runs.
pub fn sleeping_playbook(mark: &str) -> String {
    format!(
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - name: before\n      ansible.builtin.debug:\n        msg: \"about to sleep\"\n    - name: sleep\n      ansible.builtin.shell: \"sleep 120; echo {mark}\"\n"
    )
}

/// A task printing `n` numbered lines at once (`format` as ansible's sequence lookup takes it,
/// e.g. `a-%05d`), one per line of the debug output: bulk output without the `command`
/// module, which is slow with huge results.
pub fn numbered_lines_task(name: &str, format: &str, n: usize) -> String {
    format!(
        "    - name: {name}\n      ansible.builtin.debug:\n        msg: \"{{{{ query('ansible.builtin.sequence', 'start=1 end={n} format={format}') }}}}\"\n"
    )
}

pub struct World {
    pub store: Store,
    pub admin: User,
    pub dir: tempfile::TempDir,
}

/// The Python that runs ansible here (for `ansible_python_interpreter` on local connections).
pub fn python() -> String {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output();
    out.ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/usr/bin/python3".into())
}

impl World {
    /// Connects to (and migrates) the database and creates an admin.
    pub async fn new(database_url: &str) -> World {
        let store = Store::connect(database_url, &PoolConfig::default())
            .await
            .expect("connect");
        store.migrate_up().await.expect("migrate");
        let admin = store
            .create_user(
                &NewUser {
                    username: "ops".into(),
                    email: "ops@example.com".into(),
                    password: "correct horse battery".into(),
                    role: Role::Admin,
                    must_change_password: false,
                },
                &Actor::system(),
            )
            .await
            .expect("admin");
        World {
            store,
            admin,
            dir: tempfile::tempdir().expect("dir"),
        }
    }

    /// A server that ansible reaches with a local connection, tagged `tags`.
    pub async fn local_server(
        &self,
        hostname: &str,
        tags: serde_json::Value,
        environment: &str,
    ) -> Server {
        let mut s = NewServer::new(hostname, "127.0.0.1", "linux");
        s.tags = Some(tags);
        s.environment = Some(environment.into());
        s.host_vars = Some(
            serde_json::json!({"ansible_connection": "local", "ansible_python_interpreter": python()}),
        );
        self.store
            .create_server(&s, &Actor::user(self.admin.id))
            .await
            .expect("server")
    }

    /// A playbook with this YAML, stored in a file with its SHA-256.
    pub async fn playbook(&self, name: &str, yaml: &str) -> Playbook {
        let path: PathBuf = self.dir.path().join(format!("{name}.yml"));
        std::fs::write(&path, yaml).expect("write playbook");
        self.store
            .create_playbook(
                &NewPlaybook {
                    name: name.into(),
                    description: None,
                    file_path: path.display().to_string(),
                    file_hash: hex::encode(Sha256::digest(yaml.as_bytes())),
                    tags: None,
                    variables: None,
                },
                &Actor::user(self.admin.id),
            )
            .await
            .expect("playbook")
    }

    pub async fn launch(&self, playbook: &Playbook, server: &Server) -> Job {
        self.launch_with(playbook, server, None).await
    }

    /// Launches with these extra vars (a JSON object).
    pub async fn launch_with(
        &self,
        playbook: &Playbook,
        server: &Server,
        extra_vars: Option<serde_json::Value>,
    ) -> Job {
        self.store
            .create_jobs(
                &[NewJob {
                    playbook_id: playbook.id,
                    server_id: server.id,
                    user_id: self.admin.id,
                    extra_vars,
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
                &Actor::user(self.admin.id),
            )
            .await
            .expect("launch")
            .remove(0)
    }

    /// The tickets opened for a job.
    pub async fn tickets(&self, job: &Job) -> Vec<outpost_controller::model::Ticket> {
        let filter = outpost_controller::store::tickets::TicketFilter {
            job_id: Some(job.id),
            ..Default::default()
        };
        self.store
            .list_tickets(&filter, outpost_controller::model::Paging::default())
            .await
            .expect("tickets")
            .items
    }

    pub async fn job(&self, job: &Job) -> Job {
        self.store.get_job(job.id).await.expect("job")
    }

    /// Waits until the job reaches `status` (panics on another final status).
    pub async fn wait_status(&self, job: &Job, status: JobStatus, timeout: Duration) -> Job {
        crate::wait_for(
            &format!("job {} to be {status}", job.job_id),
            timeout,
            || async {
                let j = self.store.get_job(job.id).await.ok()?;
                if j.status.is_final() && j.status != status {
                    panic!(
                        "job {} ended {} (wanted {status}): {:?}",
                        j.job_id, j.status, j.error_message
                    );
                }
                (j.status == status).then_some(j)
            },
        )
        .await
    }

    /// Waits until the job is final.
    pub async fn wait_final(&self, job: &Job, timeout: Duration) -> Job {
        crate::wait_for(
            &format!("job {} to finish", job.job_id),
            timeout,
            || async {
                let j = self.store.get_job(job.id).await.ok()?;
                j.status.is_final().then_some(j)
            },
        )
        .await
    }

    /// Every stored line of a job, in order.
    pub async fn lines(&self, job: &Job) -> Vec<LogLine> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let page = self
                .store
                .read_log_lines(job.id, after, 10_000)
                .await
                .expect("read logs");
            let Some(last) = page.last() else { break };
            after = last.line_number;
            out.extend(page);
        }
        out
    }

    /// Asserts lines are numbered 1..=n with no gap or duplicate; returns n.
    pub async fn assert_contiguous(&self, job: &Job) -> usize {
        let lines = self.lines(job).await;
        for (i, l) in lines.iter().enumerate() {
            assert_eq!(
                l.line_number as usize,
                i + 1,
                "job {}: line {} is numbered {}",
                job.job_id,
                i + 1,
                l.line_number
            );
        }
        let (max, count) = self.store.log_extent(job.id).await.expect("extent");
        assert_eq!(
            (max as i64, count),
            (lines.len() as i64, lines.len() as i64)
        );
        lines.len()
    }
}
