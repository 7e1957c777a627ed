//! What an agent is handed: the job's project revision (named by digest, carried inline when
//! small), the playbook's path in it, the target server, the merged variables and the secrets
//! of the job's credentials.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use lru::LruCache;
use outpost_protocol::message::{
    Assignment, JobSecrets, RevisionRef, SecretVar, Target, INLINE_REVISION_BYTES,
};
use sha2::{Digest, Sha256};

use crate::credential::{self, JobCredentials};
use crate::keyring::Keyring;
use crate::model::{
    Credential, CredentialId, Job, JobId, JobUuid, Playbook, PlaybookId, Project, ProjectId,
    Revision, RevisionId, Server, ServerId,
};
use crate::store::credentials::{BatchCredentials, CredentialsOf, Use};
use crate::store::jobs::SealedVars;
use crate::store::{Store, StoreError};

/// Why an assignment was not made.
#[derive(Debug)]
pub(super) enum Unmade {
    /// The job cannot run as it stands (no revision, a changed file, a secret that does not
    /// open, a refused read): it fails, saying this.
    Refused(String),
    /// The database was away: the job stays claimed, and is handed over again or settled.
    Away(StoreError),
}

impl From<String> for Unmade {
    fn from(reason: String) -> Unmade {
        Unmade::Refused(reason)
    }
}

impl From<StoreError> for Unmade {
    fn from(e: StoreError) -> Unmade {
        if e.is_unavailable() {
            Unmade::Away(e)
        } else {
            Unmade::Refused(e.to_string())
        }
    }
}

/// Small revisions by digest: read and verified once, shared by every job of them. Shared by
/// the assignments of one batch, made side by side: each cache is locked only to look up or to
/// insert, never across an await (two jobs missing the same entry both make it, alike). Each
/// keeps at most [`KEPT`] entries, the least recently handed out dropped first: a controller
/// running for months meets many revisions, and one dropped is only read again.
pub(super) struct PlaybookCache {
    inline: Mutex<LruCache<String, Arc<Vec<u8>>>>,
    /// Revisions made of playbook rows outside any project, by (path, hash).
    loose: Mutex<LruCache<(String, String), RevisionRef>>,
}

/// Entries each cache keeps: a revision carried inline is at most 64 KiB, so each holds at
/// most 16 MiB (a loose playbook's revision carries its own copy of its bytes).
const KEPT: NonZeroUsize = NonZeroUsize::new(256).expect("not zero");

impl Default for PlaybookCache {
    fn default() -> PlaybookCache {
        PlaybookCache {
            inline: Mutex::new(LruCache::new(KEPT)),
            loose: Mutex::new(LruCache::new(KEPT)),
        }
    }
}

/// The rows the assignments of one batch read, read once a batch, instead of each assignment
/// reading its own copies beside the batch's claims. The rows jobs share (the playbook, its
/// project and revision, which a wave's jobs have in common): the first assignment that needs
/// one reads it while the others made beside it wait for that read; a read that fails is not
/// kept (the next assignment tries again). The jobs' own rows (their credentials and sealed
/// answers): for every job of the batch at once, when the first assignment needs them; if
/// that read fails, each job reads its own, as if alone, so that one bad row fails one job.
/// Lives for one batch only, so nothing in it is older than the batch, but for the rows a
/// launch read for its own job ([`LaunchReads`]): those are older, read beside the launch's
/// transaction (a few milliseconds) or, for a schedule's firing, as it planned (up to the
/// firing task's lead, 25 ms, before the slot).
#[derive(Default)]
pub(super) struct BatchReads {
    playbooks: Cells<PlaybookId, Playbook>,
    projects: Cells<ProjectId, Project>,
    revisions: Cells<RevisionId, Revision>,
    /// What the batch's jobs' own rows are found by.
    jobs: Vec<CredentialsOf>,
    /// The batch's read of them: `None` when it failed.
    own: tokio::sync::OnceCell<Option<OwnRows>>,
    /// Jobs' own rows their launches read already ([`LaunchReads`]), not read again.
    known: HashMap<JobId, Own>,
}

/// The rows a launch that claims its job reads for that job's assignment before its claim
/// commits (beside its transaction, on other connections; a schedule's firing while it plans),
/// so that the scheduler hands the job over with nothing left to read once the claim commits:
/// the playbook's project and the recorded revision (rows the launch does not write) and the
/// job's own credentials and sealed answers, as the launch names and writes them. A row that
/// could not be read is left out, and read at the hand-over as for any other job.
#[derive(Debug, Clone)]
pub struct LaunchReads {
    of: ReadFor,
    project: Option<Project>,
    revision: Option<Revision>,
    own: Option<Own>,
}

/// What a launch's reads were read for: its job (the handle its answers are sealed to), and
/// the playbook, server (with its two credentials), revision and named credentials they follow
/// from.
#[derive(Debug, Clone, PartialEq)]
struct ReadFor {
    job: JobUuid,
    playbook: PlaybookId,
    server: (ServerId, Option<CredentialId>, Option<CredentialId>),
    revision: Option<RevisionId>,
    named: Vec<CredentialId>,
}

impl ReadFor {
    fn of(job: &crate::store::jobs::NewJob, server: &Server) -> ReadFor {
        ReadFor {
            job: job.job_uuid,
            playbook: job.playbook_id,
            server: (
                server.id,
                server.ssh_credential_id,
                server.become_credential_id,
            ),
            revision: job.revision_id,
            named: job.credential_ids.clone(),
        }
    }
}

impl LaunchReads {
    /// Whether they were read for `job` on `server`: rows read for another job's launch are
    /// never handed to this one.
    pub fn are_for(&self, job: &crate::store::jobs::NewJob, server: &Server) -> bool {
        self.of == ReadFor::of(job, server)
    }

    /// Reads them for the launch of `job` on `server` (its playbook `playbook`).
    pub async fn read(
        store: &Store,
        job: &crate::store::jobs::NewJob,
        server: &Server,
        playbook: &Playbook,
    ) -> LaunchReads {
        let project = async {
            match playbook.project_id {
                Some(p) => store.get_project(p).await.ok(),
                None => None,
            }
        };
        let revision = async {
            match job.revision_id {
                Some(r) => store.get_revision(r).await.ok(),
                None => None,
            }
        };
        let (project, revision, credentials) = tokio::join!(
            project,
            revision,
            store.credentials_of_launch(job.playbook_id, server, &job.credential_ids)
        );
        LaunchReads {
            of: ReadFor::of(job, server),
            project,
            revision,
            own: credentials.ok().map(|c| (c, job.secret_vars.clone())),
        }
    }
}

/// A job's own rows: its credentials, each with where it comes from, and its sealed answers.
type Own = (Vec<(Use, Credential)>, Option<SealedVars>);

/// The batch's jobs' own rows.
struct OwnRows {
    credentials: BatchCredentials,
    secret_vars: HashMap<JobId, SealedVars>,
}

type Cells<K, V> = Mutex<HashMap<K, Arc<tokio::sync::OnceCell<V>>>>;

/// Puts `value` in `key`'s cell unless it holds one (or a read of it is under way).
fn seed<K: std::hash::Hash + Eq, V>(cells: &Cells<K, V>, key: K, value: V) {
    lock(cells)
        .entry(key)
        .or_insert_with(|| Arc::new(tokio::sync::OnceCell::new_with(Some(value))));
}

/// The value of `key` in `cells`, read by `read` if no one has yet; callers asking while a
/// read runs wait for it. The map is locked only to find the key's cell, never across the read.
async fn read_once<K, V, E, F, Fut>(cells: &Cells<K, V>, key: K, read: F) -> Result<V, E>
where
    K: std::hash::Hash + Eq,
    V: Clone,
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<V, E>>,
{
    let cell = lock(cells).entry(key).or_default().clone();
    cell.get_or_try_init(read).await.cloned()
}

impl BatchReads {
    /// The reads of a batch of `(job, its server)`.
    pub(super) fn new<'a>(batch: impl IntoIterator<Item = (&'a Job, &'a Server)>) -> BatchReads {
        BatchReads {
            jobs: batch
                .into_iter()
                .map(|(j, s)| credentials_of(j, s))
                .collect(),
            ..BatchReads::default()
        }
    }

    /// Takes the rows `job`'s launch read for it ([`LaunchReads::read`]), not to read them
    /// again.
    pub(super) fn know(&mut self, job: &Job, reads: LaunchReads) {
        // Each row goes in its own id's cell, where a read of that id would put it.
        if let Some(p) = reads.project {
            seed(&self.projects, p.id, p);
        }
        if let Some(r) = reads.revision {
            seed(&self.revisions, r.id, r);
        }
        if let Some(own) = reads.own {
            // Nor in the batch's read of its jobs' own rows.
            self.jobs.retain(|j| j.job != job.id);
            self.known.insert(job.id, own);
        }
    }

    async fn playbook(&self, store: &Store, id: PlaybookId) -> crate::store::Result<Playbook> {
        read_once(&self.playbooks, id, || store.get_playbook(id)).await
    }

    async fn project(&self, store: &Store, id: ProjectId) -> crate::store::Result<Project> {
        read_once(&self.projects, id, || store.get_project(id)).await
    }

    async fn revision(&self, store: &Store, id: RevisionId) -> crate::store::Result<Revision> {
        read_once(&self.revisions, id, || store.get_revision(id)).await
    }

    /// The credentials and sealed answers of `job` on `server`: those its launch read, when it
    /// did; else from the batch's one read when the job is in the batch as it is here and that
    /// read went well; else read for it alone.
    async fn own(&self, store: &Store, job: &Job, server: &Server) -> crate::store::Result<Own> {
        if let Some((credentials, vars)) = self.known.get(&job.id) {
            return Ok((credentials.clone(), vars.clone()));
        }
        let of = credentials_of(job, server);
        let batch = if self.jobs.contains(&of) {
            self.own
                .get_or_init(|| async {
                    let ids: Vec<JobId> = self.jobs.iter().map(|j| j.job).collect();
                    let (credentials, secret_vars) = tokio::join!(
                        store.credentials_of_jobs(&self.jobs),
                        store.secret_vars_of_jobs(&ids)
                    );
                    Some(OwnRows {
                        credentials: credentials.ok()?,
                        secret_vars: secret_vars.ok()?,
                    })
                })
                .await
                .as_ref()
        } else {
            None
        };
        if let Some(rows) = batch {
            return Ok((
                rows.credentials.of(&of),
                rows.secret_vars.get(&job.id).cloned(),
            ));
        }
        let alone = [of];
        let (credentials, vars) = tokio::join!(
            store.credentials_of_jobs(&alone),
            store.job_secret_vars(job.id)
        );
        Ok((credentials?.of(&of), vars?))
    }
}

fn credentials_of(job: &Job, server: &Server) -> CredentialsOf {
    CredentialsOf {
        job: job.id,
        playbook: job.playbook_id,
        ssh: server.ssh_credential_id,
        become_password: server.become_credential_id,
    }
}

/// One job of a batch whose assignment is to be made: the job, its server, its playbook when
/// the caller read it already, its dispatch id and its time limit.
pub(super) type ToMake<'a> = (&'a Job, &'a Server, Option<&'a Playbook>, &'a str, Duration);

impl PlaybookCache {
    /// The assignments of a batch's jobs, to be made side by side on the batch's `shared`
    /// reads. A list, not a stream mapping a closure over borrowed items: that makes the
    /// scheduler's future lose `Send` (the compiler cannot prove it for every lifetime).
    pub(super) fn assignments<'a>(
        &'a self,
        store: &'a Store,
        keyring: &'a Keyring,
        data_dir: &'a Path,
        shared: &'a BatchReads,
        jobs: impl IntoIterator<Item = ToMake<'a>>,
    ) -> Vec<impl std::future::Future<Output = Result<Assignment, Unmade>> + 'a> {
        jobs.into_iter()
            .map(|(job, server, known, dispatch_id, limit)| {
                self.assignment(
                    store,
                    keyring,
                    data_dir,
                    job,
                    server,
                    known,
                    shared,
                    dispatch_id,
                    limit,
                )
            })
            .collect()
    }

    /// Everything the agent needs for `job`; a [`Unmade::Refused`] is a reason to fail it.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn assignment(
        &self,
        store: &Store,
        keyring: &Keyring,
        data_dir: &Path,
        job: &Job,
        server: &Server,
        known: Option<&Playbook>,
        shared: &BatchReads,
        dispatch_id: &str,
        time_limit: Duration,
    ) -> Result<Assignment, Unmade> {
        let playbook = match known.filter(|p| p.id == job.playbook_id) {
            Some(p) => p.clone(),
            None => shared.playbook(store, job.playbook_id).await?,
        };
        let Some(project_id) = playbook.project_id else {
            let secrets = secrets(shared, store, keyring, job, server).await?;
            let revision = self.loose(data_dir, &playbook).await?;
            let mut a = build(job, server, &playbook, revision, dispatch_id, time_limit)?;
            a.secrets = secrets;
            return Ok(a);
        };
        // The secrets and the revision are read side by side: they are on the path from a
        // launch to its agent.
        let tree = async {
            // The revision recorded at launch, read beside its project; a job launched before
            // projects runs the project's current one.
            let (project, recorded) = match job.revision_id {
                Some(r) => {
                    let (p, r) =
                        tokio::join!(shared.project(store, project_id), shared.revision(store, r));
                    (p, Some(r))
                }
                None => (shared.project(store, project_id).await, None),
            };
            let project = project?;
            let revision = match recorded {
                Some(r) => r?,
                None => {
                    let current = project.current_revision_id.ok_or_else(|| {
                        format!("project {} has no revision yet: sync it", project.name)
                    })?;
                    shared.revision(store, current).await?
                }
            };
            Ok::<_, Unmade>((project, revision))
        };
        let (secrets, tree) = tokio::join!(secrets(shared, store, keyring, job, server), tree);
        let (secrets, (project, revision)) = (secrets?, tree?);
        let inline = self.inline(data_dir, &revision).await?;
        let mut a = build(
            job,
            server,
            &playbook,
            revision_ref(&project, &revision, inline),
            dispatch_id,
            time_limit,
        )?;
        a.secrets = secrets;
        Ok(a)
    }

    /// A playbook row outside any project (made before projects and not adopted, or written
    /// straight to the store): its file, checked against its hash, packed as a one-file
    /// revision so that it runs like any other.
    async fn loose(&self, data_dir: &Path, playbook: &Playbook) -> Result<RevisionRef, String> {
        let key = (playbook.file_path.clone(), playbook.file_hash.clone());
        if let Some(r) = lock(&self.loose).get(&key) {
            return Ok(r.clone());
        }
        if !Path::new(&playbook.file_path).is_absolute() {
            return Err(format!(
                "playbook {} belongs to no project and has no file of its own",
                playbook.name
            ));
        }
        let content = tokio::fs::read(&playbook.file_path)
            .await
            .map_err(|e| format!("cannot read playbook file {}: {e}", playbook.file_path))?;
        let actual = hex::encode(Sha256::digest(&content));
        if actual != playbook.file_hash {
            return Err(format!(
                "playbook file {} changed on disk: its SHA-256 is {actual}, the playbook record says {}; update the playbook",
                playbook.file_path, playbook.file_hash
            ));
        }
        let dir = data_dir.to_owned();
        let packed = tokio::task::spawn_blocking(move || {
            let work = crate::project::single_file_tree(&dir, &content)?;
            crate::project::pack_revision(work.path(), &dir)
        })
        .await
        .map_err(|e| format!("cannot pack the playbook: {e}"))?
        .map_err(|e| format!("cannot pack the playbook: {e}"))?;
        let size = i64::try_from(packed.size).unwrap_or(i64::MAX);
        let revision = Revision {
            id: crate::model::RevisionId(0),
            project_id: crate::model::ProjectId(0),
            digest: packed.digest,
            git_commit: None,
            size_bytes: size,
            entries: packed.entries as i32,
            created_at: chrono::Utc::now(),
        };
        let inline = self.inline(data_dir, &revision).await?;
        let r = RevisionRef {
            digest: revision.digest,
            size: packed.size,
            commit: None,
            inventory_dir: String::new(),
            inline: inline.map(|b| b.as_ref().clone()),
        };
        lock(&self.loose).put(key, r.clone());
        Ok(r)
    }

    /// The revision's bytes when it is small enough to travel in the assignment (verified
    /// against its digest); otherwise checks that its file is there for the agent to fetch.
    async fn inline(
        &self,
        data_dir: &Path,
        revision: &Revision,
    ) -> Result<Option<Arc<Vec<u8>>>, String> {
        let path = revision_file(data_dir, &revision.digest)?;
        if revision.size_bytes < 0 || revision.size_bytes as u64 > INLINE_REVISION_BYTES as u64 {
            return match tokio::fs::metadata(&path).await {
                Ok(m) if m.len() == revision.size_bytes as u64 => Ok(None),
                Ok(m) => Err(format!(
                    "revision file {} is {} bytes, its record says {}",
                    path.display(),
                    m.len(),
                    revision.size_bytes
                )),
                Err(e) => Err(format!("cannot read revision file {}: {e}", path.display())),
            };
        }
        if let Some(bytes) = lock(&self.inline).get(&revision.digest) {
            return Ok(Some(bytes.clone()));
        }
        // Bounded: a revision this small, checked against its record before reading.
        let len = tokio::fs::metadata(&path)
            .await
            .map_err(|e| format!("cannot read revision file {}: {e}", path.display()))?
            .len();
        if len > INLINE_REVISION_BYTES as u64 {
            return Err(format!(
                "revision file {} is {len} bytes, its record says {}",
                path.display(),
                revision.size_bytes
            ));
        }
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|e| format!("cannot read revision file {}: {e}", path.display()))?;
        let actual = hex::encode(Sha256::digest(&bytes));
        if actual != revision.digest {
            return Err(format!(
                "revision file {} changed on disk: its SHA-256 is {actual}, not {}",
                path.display(),
                revision.digest
            ));
        }
        let bytes = Arc::new(bytes);
        lock(&self.inline).put(revision.digest.clone(), bytes.clone());
        Ok(Some(bytes))
    }
}

/// A cache map, locked for a lookup or an insert. A panic while one was held left nothing
/// half-written (each is one call on the map), so a poisoned lock is taken as it is.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The job's secrets: its server's SSH key and become password, its project's vault
/// passwords, and those named at its launch (which win), with its secret answers, opened for
/// this attempt only.
async fn secrets(
    shared: &BatchReads,
    store: &Store,
    keyring: &Keyring,
    job: &Job,
    server: &Server,
) -> Result<JobSecrets, Unmade> {
    let (rows, sealed) = shared.own(store, job, server).await?;
    let vars = match sealed {
        Some(sealed) => secret_vars(keyring, job, &sealed)?,
        None => Vec::new(),
    };
    if rows.is_empty() {
        let mut secrets = JobSecrets::default();
        secrets.vars = vars;
        return Ok(secrets);
    }
    let mut found = JobCredentials::default();
    for (used, c) in &rows {
        let m = credential::open(keyring, c).map_err(|e| e.to_string())?;
        match used {
            Use::ServerSsh => found.server_ssh = Some((c, m)),
            Use::ServerBecome => found.server_become = Some((c, m)),
            Use::ProjectVault => found.project_vault.push((c, m)),
            Use::Launch => found.launch.push((c, m)),
        }
    }
    let mut secrets = credential::job_secrets(found);
    secrets.vars = vars;
    Ok(secrets)
}

/// The job's secret survey answers, opened for this attempt only.
fn secret_vars(
    keyring: &Keyring,
    job: &Job,
    sealed: &SealedVars,
) -> Result<Vec<SecretVar>, Unmade> {
    let opened = crate::survey::sealing::open(keyring, job.job_id, sealed)
        .map_err(|e| format!("the job's secret answers do not open: {e}"))?;
    Ok(opened
        .into_iter()
        .map(|(name, value)| SecretVar {
            name,
            value: value.as_str().to_owned(),
        })
        .collect())
}

fn revision_file(data_dir: &Path, digest: &str) -> Result<PathBuf, String> {
    if !outpost_protocol::tree::is_digest(digest) {
        return Err(format!("revision digest {digest:?} is not a SHA-256"));
    }
    Ok(crate::project::revision_path(data_dir, digest))
}

/// The revision as the agent sees it. `inventory_dir`: the directory of the project's
/// inventory file, whose group_vars/ and host_vars/ apply (the root when it has none).
fn revision_ref(
    project: &Project,
    revision: &Revision,
    inline: Option<Arc<Vec<u8>>>,
) -> RevisionRef {
    let inventory_dir = project
        .inventory_path
        .as_deref()
        .and_then(|p| Path::new(p).parent())
        .map(|d| d.to_string_lossy().trim_start_matches("./").to_owned())
        .filter(|d| d != ".")
        .unwrap_or_default();
    RevisionRef {
        digest: revision.digest.clone(),
        size: u64::try_from(revision.size_bytes).unwrap_or(0),
        commit: revision.git_commit.clone(),
        inventory_dir,
        inline: inline.map(|b| b.as_ref().clone()),
    }
}

/// The assignment itself. The playbook's default variables (an admin's) are curated and may be
/// templates; the job's launch values override them and are data, unless an admin launched
/// them with templates allowed.
fn build(
    job: &Job,
    server: &Server,
    playbook: &Playbook,
    revision: RevisionRef,
    dispatch_id: &str,
    time_limit: Duration,
) -> Result<Assignment, String> {
    let mut vars = playbook
        .variables
        .as_ref()
        .map(|v| v.0.clone())
        .unwrap_or_default();
    let mut launch = serde_json::Map::new();
    if let Some(extra) = &job.extra_vars {
        if job.extra_vars_templated {
            vars.extend(extra.0.clone());
        } else {
            launch = extra.0.clone();
        }
    }
    let options = match &job.run_options {
        Some(o) => serde_json::from_value(serde_json::Value::Object(o.0.clone()))
            .map_err(|e| format!("the job's run options are unreadable: {e}"))?,
        None => Default::default(),
    };
    Ok(Assignment {
        options,
        job: job.job_id.0,
        dispatch_id: dispatch_id.to_owned(),
        playbook_name: playbook.name.clone(),
        playbook_path: if playbook.project_id.is_some() {
            playbook.file_path.clone()
        } else {
            crate::project::SINGLE_PLAYBOOK.to_owned()
        },
        revision,
        target: Target {
            hostname: server.hostname.clone(),
            ip_address: server.ip_address.clone(),
            ssh_port: u16::try_from(server.ssh_port).unwrap_or(22),
            ssh_user: server.ssh_user.clone(),
            ssh_key_path: server.ssh_key_path.clone(),
            host_vars_json: server
                .host_vars
                .as_ref()
                .map(|h| serde_json::Value::Object(h.0.clone()).to_string())
                .unwrap_or_else(|| "{}".into()),
            groups: server
                .inventory_groups
                .as_ref()
                .map(|g| g.0.clone())
                .unwrap_or_default(),
        },
        vars_json: serde_json::Value::Object(vars).to_string(),
        launch_vars_json: serde_json::Value::Object(launch).to_string(),
        time_limit_secs: u32::try_from(time_limit.as_secs()).unwrap_or(u32::MAX),
        secrets: JobSecrets::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::samples;

    /// A job as a launch plans it, before it has an id.
    fn new_job() -> crate::store::jobs::NewJob {
        crate::store::jobs::NewJob {
            playbook_id: PlaybookId(1),
            server_id: ServerId(1),
            user_id: crate::model::UserId(1),
            extra_vars: None,
            extra_vars_templated: false,
            run_options: None,
            revision_id: Some(RevisionId(1)),
            credential_ids: vec![CredentialId(4), CredentialId(5)],
            job_uuid: JobUuid(uuid::Uuid::from_u128(1)),
            template_id: None,
            time_limit_secs: None,
            secret_vars: None,
            schedule_id: None,
            wave: 0,
        }
    }

    #[test]
    fn a_launchs_reads_are_for_its_own_job_alone() {
        let server = samples::server(serde_json::json!({}));
        let job = new_job();
        let reads = LaunchReads {
            of: ReadFor::of(&job, &server),
            project: None,
            revision: None,
            own: Some((Vec::new(), None)),
        };
        assert!(reads.are_for(&job, &server));
        let mut elsewhere = server.clone();
        elsewhere.id = ServerId(2);
        assert!(!reads.are_for(&job, &elsewhere), "another server");
        let mut rekeyed = server.clone();
        rekeyed.ssh_credential_id = Some(CredentialId(9));
        assert!(!reads.are_for(&job, &rekeyed), "another SSH key");
        let others: [fn(&mut crate::store::jobs::NewJob); 4] = [
            |j| j.job_uuid = JobUuid(uuid::Uuid::from_u128(2)),
            |j| j.playbook_id = PlaybookId(2),
            |j| j.revision_id = None,
            |j| j.credential_ids.truncate(1),
        ];
        for (i, change) in others.into_iter().enumerate() {
            let mut other = new_job();
            change(&mut other);
            assert!(!reads.are_for(&other, &server), "change {i}");
        }
    }

    #[test]
    fn job_vars_override_playbook_defaults_and_the_target_is_complete() {
        let job = samples::job(serde_json::json!({"version": "2.0", "extra": true}));
        let pb = samples::playbook(serde_json::json!({"version": "1.0", "user": "app"}));
        let mut server = samples::server(serde_json::json!({}));
        server.host_vars = serde_json::json!({"ansible_become": true})
            .as_object()
            .map(|o| sqlx::types::Json(o.clone()));
        server.inventory_groups = Some(sqlx::types::Json(vec![
            vec!["prod".into(), "web".into()],
            vec!["dc_fra1".into()],
        ]));
        let a = build(
            &job,
            &server,
            &pb,
            sample_revision(),
            "d-1",
            Duration::from_secs(90),
        )
        .unwrap();
        // Launch values are data, kept apart from the playbook's curated defaults…
        let vars: serde_json::Value = serde_json::from_str(&a.vars_json).unwrap();
        let launch: serde_json::Value = serde_json::from_str(&a.launch_vars_json).unwrap();
        assert_eq!(vars, serde_json::json!({"version": "1.0", "user": "app"}));
        assert_eq!(launch, serde_json::json!({"version": "2.0", "extra": true}));
        // …unless an admin launched them with templates allowed.
        let mut templated = job.clone();
        templated.extra_vars_templated = true;
        let a2 = build(
            &templated,
            &server,
            &pb,
            sample_revision(),
            "d-1",
            Duration::from_secs(90),
        )
        .unwrap();
        let vars: serde_json::Value = serde_json::from_str(&a2.vars_json).unwrap();
        assert_eq!(
            vars,
            serde_json::json!({"version": "2.0", "user": "app", "extra": true})
        );
        assert_eq!(a2.launch_vars_json, "{}");
        assert_eq!(
            (a.target.ssh_port, a.target.ssh_user.as_str()),
            (2222, "deploy")
        );
        assert_eq!(
            a.target.ssh_key_path.as_deref(),
            Some("/home/deploy/.ssh/id")
        );
        assert_eq!(a.target.host_vars_json, r#"{"ansible_become":true}"#);
        assert_eq!(
            a.target.groups,
            [vec!["prod", "web"], vec!["dc_fra1"]],
            "the server's group chains reach the agent"
        );
        assert_eq!((a.time_limit_secs, a.dispatch_id.as_str()), (90, "d-1"));
        // A row outside any project runs as a one-file revision.
        assert_eq!(a.playbook_path, "playbook.yml");
        assert_eq!(a.revision, sample_revision());
    }

    fn sample_revision() -> RevisionRef {
        RevisionRef {
            digest: "c".repeat(64),
            size: 10240,
            commit: None,
            inventory_dir: String::new(),
            inline: None,
        }
    }

    fn revision(digest: &str, size: i64) -> Revision {
        Revision {
            id: crate::model::RevisionId(1),
            project_id: crate::model::ProjectId(1),
            digest: digest.into(),
            git_commit: Some("e".repeat(40)),
            size_bytes: size,
            entries: 1,
            created_at: chrono::Utc::now(),
        }
    }

    #[tokio::test]
    async fn a_batch_reads_a_shared_row_once_and_keeps_no_failed_read() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let cells: Cells<u32, String> = Mutex::default();
        let reads = AtomicUsize::new(0);
        let read = |value: &'static str| {
            let reads = &reads;
            move || async move {
                reads.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok::<_, String>(value.to_owned())
            }
        };
        // Eight assignments side by side asking for the same row: one read, every one served.
        let got =
            futures_util::future::join_all((0..8).map(|_| read_once(&cells, 1, read("a")))).await;
        assert!(got.iter().all(|g| g.as_deref() == Ok("a")), "{got:?}");
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        // Another key is its own read.
        assert_eq!(read_once(&cells, 2, read("b")).await.as_deref(), Ok("b"));
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        // A read that fails is not kept: the next asker reads again.
        let failed: Result<String, String> =
            read_once(&cells, 3, || async { Err("away".to_owned()) }).await;
        assert_eq!(failed, Err("away".to_owned()));
        assert_eq!(read_once(&cells, 3, read("c")).await.as_deref(), Ok("c"));
        assert_eq!(reads.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_launchs_own_reads_are_used_and_the_other_jobs_still_read() {
        // A store whose every read fails (nothing migrated): what is served without an error
        // was not read.
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("empty.db").display());
        let store = Store::connect(&url, &crate::store::PoolConfig::default())
            .await
            .unwrap();
        let server = samples::server(serde_json::json!({}));
        let mut launched = samples::job(serde_json::json!({}));
        launched.id = JobId(7);
        let mut other = launched.clone();
        other.id = JobId(8);
        let mut shared = BatchReads::new([(&launched, &server), (&other, &server)]);
        let project = samples::project();
        let vars = SealedVars {
            names: vec!["db_password".into()],
            key_id: "k1".into(),
            sealed: vec![1, 2, 3],
        };
        shared.know(
            &launched,
            LaunchReads {
                of: ReadFor::of(&new_job(), &server),
                project: Some(project.clone()),
                revision: Some(revision(&"a".repeat(64), 10)),
                own: Some((Vec::new(), Some(vars.clone()))),
            },
        );
        let (credentials, sealed) = shared.own(&store, &launched, &server).await.unwrap();
        assert!(credentials.is_empty());
        assert_eq!(sealed.map(|v| v.sealed), Some(vars.sealed));
        assert_eq!(
            shared.project(&store, project.id).await.unwrap().id,
            project.id
        );
        let rev = shared.revision(&store, RevisionId(1)).await.unwrap();
        assert_eq!(rev.digest, "a".repeat(64));
        // The launched job is out of the batch's read; the other job still reads its own.
        assert_eq!(shared.jobs.len(), 1);
        assert!(shared.own(&store, &other, &server).await.is_err());
        assert!(shared.project(&store, ProjectId(99)).await.is_err());
    }

    #[tokio::test]
    async fn the_cache_of_small_revisions_keeps_the_most_recently_used() {
        let data = tempfile::tempdir().unwrap();
        let revisions: Vec<Revision> = (0..=KEPT.get())
            .map(|i| {
                let text = format!("- hosts: all # {i}\n");
                let tree = crate::project::single_file_tree(data.path(), text.as_bytes()).unwrap();
                let packed = crate::project::pack_revision(tree.path(), data.path()).unwrap();
                revision(&packed.digest, packed.size as i64)
            })
            .collect();
        let cache = PlaybookCache::default();
        let (last, rest) = revisions.split_last().unwrap();
        for r in rest {
            assert!(cache.inline(data.path(), r).await.unwrap().is_some());
        }
        // The first is handed out again, then one more comes than the cache keeps: the one
        // least recently handed out (the second) makes room, the first stays.
        cache.inline(data.path(), &revisions[0]).await.unwrap();
        cache.inline(data.path(), last).await.unwrap();
        let kept = lock(&cache.inline);
        assert_eq!(kept.len(), KEPT.get());
        assert!(kept.contains(&revisions[0].digest));
        assert!(!kept.contains(&revisions[1].digest));
        assert!(kept.contains(&last.digest));
    }

    #[tokio::test]
    async fn small_revisions_travel_inline_and_a_changed_file_is_refused() {
        let data = tempfile::tempdir().unwrap();
        let tree = crate::project::single_file_tree(data.path(), b"- hosts: all\n").unwrap();
        let packed = crate::project::pack_revision(tree.path(), data.path()).unwrap();
        let rev = revision(&packed.digest, packed.size as i64);
        let cache = PlaybookCache::default();
        let inline = cache.inline(data.path(), &rev).await.unwrap().unwrap();
        assert_eq!(
            hex::encode(Sha256::digest(inline.as_slice())),
            packed.digest
        );

        // A large one is named, not carried; its file must be there.
        let big = revision(&"d".repeat(64), (INLINE_REVISION_BYTES + 1) as i64);
        let err = cache.inline(data.path(), &big).await.unwrap_err();
        assert!(err.contains("cannot read revision file"), "{err}");

        // A file changed under its digest is refused (a fresh cache reads it again).
        let path = crate::project::revision_path(data.path(), &packed.digest);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[600] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let err = PlaybookCache::default()
            .inline(data.path(), &rev)
            .await
            .unwrap_err();
        assert!(err.contains("changed on disk"), "{err}");

        // A playbook row outside any project is packed as a one-file revision.
        let data = tempfile::tempdir().unwrap();
        let pb_file = data.path().join("old.yml");
        std::fs::write(&pb_file, "- hosts: all\n").unwrap();
        let mut pb = samples::playbook(serde_json::json!({}));
        pb.file_path = pb_file.display().to_string();
        pb.file_hash = hex::encode(Sha256::digest(b"- hosts: all\n"));
        let loose = PlaybookCache::default()
            .loose(data.path(), &pb)
            .await
            .unwrap();
        assert_eq!(loose.digest, packed.digest);
        pb.file_hash = "b".repeat(64);
        let err = PlaybookCache::default()
            .loose(data.path(), &pb)
            .await
            .unwrap_err();
        assert!(err.contains("changed on disk"), "{err}");

        // Group and host variables apply from the inventory's directory.
        let mut project = crate::model::samples::project();
        project.inventory_path = Some("inventories/prod/hosts.yml".into());
        assert_eq!(
            revision_ref(&project, &rev, None).inventory_dir,
            "inventories/prod"
        );
        project.inventory_path = Some("hosts.yml".into());
        assert_eq!(revision_ref(&project, &rev, None).inventory_dir, "");
    }
}
