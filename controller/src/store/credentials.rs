//! store::credentials — credentials' rows (their secrets sealed before they get here; the store
//! never sees one in the clear) and where they are attached: servers, projects, launches.
//! Audit records name the credential, never its secret.

use std::collections::HashMap;

use serde_json::json;

use super::audit::{insert_audit, Actor, NewAudit};
use super::{now, on_pool, page, push_in, InsertedId, Result, Store, StoreError, WritePool};
use crate::model::{
    Credential, CredentialId, CredentialKind, JobId, Page, Paging, PlaybookId, ProjectId, Server,
};
use outpost_api::{CredentialUsage, NameRef};

const COLUMNS: &str = "id, uuid, name, kind, description, vault_id, public_info, key_id, secret, \
     created_by, created_at, updated_at";

/// A credential to store: its secret already sealed for the row named by `uuid`.
#[derive(Clone)]
pub struct NewCredential {
    pub uuid: String,
    pub name: String,
    pub kind: CredentialKind,
    pub description: Option<String>,
    pub vault_id: Option<String>,
    pub public_info: Option<String>,
    pub key_id: String,
    pub secret: Vec<u8>,
}

/// One row of a rotation: what was read, and what replaces it.
pub struct Reseal {
    pub id: CredentialId,
    pub old_key: String,
    pub old_secret: Vec<u8>,
    pub new_key: String,
    pub new_secret: Vec<u8>,
}

/// A change to a credential; `sealed` replaces its secret.
#[derive(Clone, Default)]
pub struct CredentialChange {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub vault_id: Option<String>,
    pub public_info: Option<Option<String>>,
    /// (key id, sealed bytes).
    pub sealed: Option<(String, Vec<u8>)>,
}

fn check_name(name: &str) -> Result<()> {
    let n = name.chars().count();
    if n == 0 || n > 255 || name.trim() != name || name.chars().any(char::is_control) {
        return Err(StoreError::invalid(
            "name",
            "must be 1 to 255 characters, without surrounding spaces or control characters",
        ));
    }
    Ok(())
}

fn check_description(d: Option<&str>) -> Result<()> {
    if d.is_some_and(|d| d.chars().count() > 2000) {
        return Err(StoreError::invalid(
            "description",
            "at most 2,000 characters",
        ));
    }
    Ok(())
}

impl Store {
    pub async fn create_credential(
        &self,
        new: &NewCredential,
        actor: &Actor,
    ) -> Result<Credential> {
        check_name(&new.name)?;
        check_description(new.description.as_deref())?;
        let ts = now();
        let id = on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let res = sqlx::query(
                "INSERT INTO credentials (uuid, name, kind, description, vault_id, public_info, key_id, \
                 secret, created_by, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&new.uuid).bind(&new.name).bind(new.kind.as_str()).bind(&new.description)
            .bind(&new.vault_id).bind(&new.public_info).bind(&new.key_id).bind(&new.secret)
            .bind(actor.user_id).bind(ts).bind(ts)
            .execute(&mut *tx).await
            .map_err(|e| StoreError::on_write(e, || format!("credential '{}'", new.name)))?;
            let id = res.inserted_id() as i32;
            insert_audit!(&mut *tx, &NewAudit {
                actor, action: "CREATE", resource_type: "credential", resource_id: Some(id),
                details: Some(json!({"name": new.name, "kind": new.kind.as_str(), "vault_id": new.vault_id})),
            })?;
            tx.commit().await?;
            id
        });
        self.get_credential(CredentialId(id)).await
    }

    pub async fn get_credential(&self, id: CredentialId) -> Result<Credential> {
        let sql = format!("SELECT {COLUMNS} FROM credentials WHERE id = ?");
        let row = on_pool!(self, p => sqlx::query_as::<_, Credential>(&sql).bind(id).fetch_optional(p).await?);
        row.ok_or_else(|| StoreError::NotFound(format!("credential {id}")))
    }

    pub async fn get_credential_by_name(&self, name: &str) -> Result<Credential> {
        let sql = format!("SELECT {COLUMNS} FROM credentials WHERE name = ?");
        let row = on_pool!(self, p => sqlx::query_as::<_, Credential>(&sql).bind(name).fetch_optional(p).await?);
        row.ok_or_else(|| StoreError::NotFound(format!("credential '{name}'")))
    }

    /// Credentials ordered by name.
    pub async fn list_credentials(&self, paging: Paging) -> Result<Page<Credential>> {
        let none: Option<&str> = None;
        Ok(
            page!(self, Credential, select: COLUMNS, from: "credentials", order: "name", paging: paging,
            filters: [("kind", none)]),
        )
    }

    /// Every credential's name by id (views show attachments by name).
    pub async fn credential_names(
        &self,
    ) -> Result<std::collections::HashMap<CredentialId, String>> {
        let rows: Vec<(CredentialId, String)> = on_pool!(self, p => sqlx::query_as("SELECT id, name FROM credentials").fetch_all(p).await?);
        Ok(rows.into_iter().collect())
    }

    /// Every credential (a rotation re-seals them all; start-up checks that they open).
    pub async fn all_credentials(&self) -> Result<Vec<Credential>> {
        let sql = format!("SELECT {COLUMNS} FROM credentials ORDER BY id");
        Ok(on_pool!(self, p => sqlx::query_as::<_, Credential>(&sql).fetch_all(p).await?))
    }

    pub async fn update_credential(
        &self,
        id: CredentialId,
        change: &CredentialChange,
        actor: &Actor,
    ) -> Result<Credential> {
        let old = self.get_credential(id).await?;
        let name = change.name.clone().unwrap_or_else(|| old.name.clone());
        check_name(&name)?;
        let description = change
            .description
            .clone()
            .unwrap_or(old.description.clone());
        check_description(description.as_deref())?;
        let vault_id = change.vault_id.clone().or(old.vault_id.clone());
        let public_info = change
            .public_info
            .clone()
            .unwrap_or(old.public_info.clone());
        let (key_id, secret) = change
            .sealed
            .clone()
            .unwrap_or((old.key_id.clone(), old.secret.clone()));
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            sqlx::query(
                "UPDATE credentials SET name = ?, description = ?, vault_id = ?, public_info = ?, \
                 key_id = ?, secret = ?, updated_at = ? WHERE id = ?",
            )
            .bind(&name).bind(&description).bind(&vault_id).bind(&public_info)
            .bind(&key_id).bind(&secret).bind(now()).bind(id)
            .execute(&mut *tx).await
            .map_err(|e| StoreError::on_write(e, || format!("credential '{name}'")))?;
            insert_audit!(&mut *tx, &NewAudit {
                actor, action: "UPDATE", resource_type: "credential", resource_id: Some(id.0),
                details: Some(json!({
                    "old": {"name": old.name, "vault_id": old.vault_id},
                    "new": {"name": name, "vault_id": vault_id},
                    "secret_replaced": change.sealed.is_some(),
                })),
            })?;
            tx.commit().await?;
        });
        self.get_credential(id).await
    }

    /// Where a credential is attached.
    pub async fn credential_usage(&self, id: CredentialId) -> Result<CredentialUsage> {
        async fn names(store: &Store, sql: &str, id: CredentialId) -> Result<Vec<NameRef>> {
            let rows: Vec<(i32, String)> =
                on_pool!(store, p => sqlx::query_as(sql).bind(id).fetch_all(p).await?);
            Ok(rows
                .into_iter()
                .map(|(id, name)| NameRef { id, name })
                .collect())
        }
        let active_jobs: i64 = on_pool!(self, p => sqlx::query_scalar(
            "SELECT COUNT(*) FROM job_credentials jc JOIN jobs j ON j.id = jc.job_id \
             WHERE jc.credential_id = ? AND j.status IN ('pending', 'running')")
            .bind(id).fetch_one(p).await?);
        Ok(CredentialUsage {
            ssh_servers: names(
                self,
                "SELECT id, hostname FROM servers WHERE ssh_credential_id = ? ORDER BY hostname",
                id,
            )
            .await?,
            become_servers: names(
                self,
                "SELECT id, hostname FROM servers WHERE become_credential_id = ? ORDER BY hostname",
                id,
            )
            .await?,
            git_projects: names(
                self,
                "SELECT id, name FROM projects WHERE git_credential_id = ? ORDER BY name",
                id,
            )
            .await?,
            vault_projects: names(
                self,
                "SELECT p.id, p.name FROM projects p JOIN project_vault_credentials v \
                ON v.project_id = p.id WHERE v.credential_id = ? ORDER BY p.name",
                id,
            )
            .await?,
            active_jobs,
        })
    }

    /// Deletes a credential attached nowhere. Jobs that named it at launch and are over keep
    /// no link to it.
    pub async fn delete_credential(&self, id: CredentialId, actor: &Actor) -> Result<()> {
        let c = self.get_credential(id).await?;
        let usage = self.credential_usage(id).await?;
        let in_use = |count: i64| StoreError::InUse {
            what: format!("credential {}", c.name),
            count,
            dependents: "attachments (servers, projects or pending jobs)",
            hint: "detach it first (GET the credential to see where it is used)",
        };
        if !usage.is_unused() {
            let count = (usage.ssh_servers.len()
                + usage.become_servers.len()
                + usage.git_projects.len()
                + usage.vault_projects.len()) as i64
                + usage.active_jobs;
            return Err(in_use(count));
        }
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let fk = |e: sqlx::Error| match &e {
                sqlx::Error::Database(db) if db.is_foreign_key_violation() => in_use(1),
                _ => StoreError::Database(e),
            };
            sqlx::query("DELETE FROM job_credentials WHERE credential_id = ?").bind(id).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM credentials WHERE id = ?").bind(id).execute(&mut *tx).await.map_err(fk)?;
            insert_audit!(&mut *tx, &NewAudit {
                actor, action: "DELETE", resource_type: "credential", resource_id: Some(id.0),
                details: Some(json!({"name": c.name, "kind": c.kind.as_str()})),
            })?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Writes re-sealed secrets (a key rotation) in one transaction: each row changes only if
    /// it still holds what was read (its key and sealed bytes), so a secret replaced meanwhile
    /// is never overwritten with the old one.
    pub async fn reseal_credentials(
        &self,
        rows: &[Reseal],
        actor: &Actor,
        old_keys: &[String],
        new_key: &str,
    ) -> Result<u64> {
        let mut changed = 0u64;
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            for r in rows {
                let res = sqlx::query(
                    "UPDATE credentials SET key_id = ?, secret = ? WHERE id = ? AND key_id = ? AND secret = ?")
                    .bind(&r.new_key).bind(&r.new_secret).bind(r.id).bind(&r.old_key).bind(&r.old_secret)
                    .execute(&mut *tx).await?;
                if res.rows_affected() != 1 {
                    return Err(StoreError::Conflict(format!(
                        "credential {} changed during the rotation; run it again", r.id)));
                }
                changed += 1;
            }
            insert_audit!(&mut *tx, &NewAudit {
                actor, action: "ROTATE_KEY", resource_type: "credential", resource_id: None,
                details: Some(json!({"credentials": changed, "old_keys": old_keys, "new_key": new_key})),
            })?;
            tx.commit().await?;
        });
        Ok(changed)
    }

    /// A project's vault password credentials.
    pub async fn project_vault_credentials(&self, project: ProjectId) -> Result<Vec<Credential>> {
        let sql = format!(
            "SELECT {} FROM credentials c JOIN project_vault_credentials v ON v.credential_id = c.id \
             WHERE v.project_id = ? ORDER BY c.vault_id, c.name",
            prefixed("c.")
        );
        Ok(
            on_pool!(self, p => sqlx::query_as::<_, Credential>(&sql).bind(project).fetch_all(p).await?),
        )
    }

    /// Replaces a project's vault password credentials.
    pub async fn set_project_vault_credentials(
        &self,
        project: ProjectId,
        ids: &[CredentialId],
        actor: &Actor,
    ) -> Result<()> {
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            sqlx::query("DELETE FROM project_vault_credentials WHERE project_id = ?")
                .bind(project).execute(&mut *tx).await?;
            for id in ids {
                sqlx::query("INSERT INTO project_vault_credentials (project_id, credential_id) VALUES (?, ?)")
                    .bind(project).bind(id).execute(&mut *tx).await
                    .map_err(|e| StoreError::on_write(e, || format!("vault credential {id} of project {project}")))?;
            }
            insert_audit!(&mut *tx, &NewAudit {
                actor, action: "UPDATE", resource_type: "project", resource_id: Some(project.0),
                details: Some(json!({"vault_credentials": ids.iter().map(|i| i.0).collect::<Vec<_>>()})),
            })?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// The credentials a job was launched with.
    pub async fn job_credentials(&self, job: JobId) -> Result<Vec<Credential>> {
        let sql = format!(
            "SELECT {} FROM credentials c JOIN job_credentials j ON j.credential_id = c.id \
             WHERE j.job_id = ? ORDER BY c.id",
            prefixed("c.")
        );
        Ok(on_pool!(self, p => sqlx::query_as::<_, Credential>(&sql).bind(job).fetch_all(p).await?))
    }
}

/// Where a job's credential comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    ServerSsh,
    ServerBecome,
    ProjectVault,
    Launch,
}

/// What a job's credentials are found by: the job (those named at its launch), its playbook
/// (its project's vault passwords) and its server's SSH key and become password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CredentialsOf {
    pub job: JobId,
    pub playbook: PlaybookId,
    pub ssh: Option<CredentialId>,
    pub become_password: Option<CredentialId>,
}

/// The credentials of a batch of jobs, read in one query ([`Store::credentials_of_jobs`]).
#[derive(Default)]
pub struct BatchCredentials {
    /// Servers' credentials, by id.
    servers: HashMap<CredentialId, Credential>,
    /// The vault passwords of each playbook's project.
    vaults: HashMap<PlaybookId, Vec<Credential>>,
    /// Those named at each job's launch.
    launch: HashMap<JobId, Vec<Credential>>,
}

impl BatchCredentials {
    /// Every credential `of` gets, with where it comes from; vault and launch credentials in
    /// id order.
    pub fn of(&self, of: &CredentialsOf) -> Vec<(Use, Credential)> {
        let mut found = Vec::new();
        for (id, used) in [
            (of.ssh, Use::ServerSsh),
            (of.become_password, Use::ServerBecome),
        ] {
            if let Some(c) = id.and_then(|id| self.servers.get(&id)) {
                found.push((used, c.clone()));
            }
        }
        for (list, used) in [
            (self.vaults.get(&of.playbook), Use::ProjectVault),
            (self.launch.get(&of.job), Use::Launch),
        ] {
            found.extend(list.into_iter().flatten().map(|c| (used, c.clone())));
        }
        found
    }
}

#[derive(sqlx::FromRow)]
struct OwnedRow {
    #[sqlx(flatten)]
    credential: Credential,
    /// 0: a server's (by its own id), 1: a playbook's project's vault, 2: a launch's.
    used_as: i32,
    /// The credential's id, the playbook's or the job's, as `used_as` says.
    owner: i32,
}

impl Store {
    /// Every credential of each of `jobs`, in one query: their servers' SSH keys and become
    /// passwords, their projects' vault passwords and those named at their launch. A batch of
    /// jobs handed over together is read at once, not one query each beside its claims.
    pub async fn credentials_of_jobs(&self, jobs: &[CredentialsOf]) -> Result<BatchCredentials> {
        if jobs.is_empty() {
            return Ok(BatchCredentials::default());
        }
        let mut ids: Vec<JobId> = jobs.iter().map(|j| j.job).collect();
        ids.sort_unstable();
        ids.dedup();
        self.credentials_read(jobs, Named::OfJobs(&ids)).await
    }

    /// The credentials a job of `playbook` on `server` launched with `named` will get, read
    /// before its rows are written (beside the launch's transaction, which its job's own read
    /// could not see into, or while a schedule's firing plans it): as
    /// [`Store::credentials_of_jobs`] reads them once the launch committed its
    /// `job_credentials` rows of those ids.
    pub async fn credentials_of_launch(
        &self,
        playbook: PlaybookId,
        server: &Server,
        named: &[CredentialId],
    ) -> Result<Vec<(Use, Credential)>> {
        let mut named = named.to_vec();
        named.sort_unstable();
        named.dedup();
        let of = CredentialsOf {
            job: LAUNCHING,
            playbook,
            ssh: server.ssh_credential_id,
            become_password: server.become_credential_id,
        };
        let batch = self
            .credentials_read(std::slice::from_ref(&of), Named::Ids(&named))
            .await?;
        Ok(batch.of(&of))
    }

    /// The one query of [`Store::credentials_of_jobs`] and [`Store::credentials_of_launch`].
    async fn credentials_read(
        &self,
        jobs: &[CredentialsOf],
        named: Named<'_>,
    ) -> Result<BatchCredentials> {
        let mut servers: Vec<CredentialId> = jobs
            .iter()
            .flat_map(|j| [j.ssh, j.become_password])
            .flatten()
            .collect();
        let mut playbooks: Vec<PlaybookId> = jobs.iter().map(|j| j.playbook).collect();
        servers.sort_unstable();
        servers.dedup();
        playbooks.sort_unstable();
        playbooks.dedup();
        let cols = prefixed("c.");
        let rows: Vec<OwnedRow> = on_pool!(self, p => {
            let mut qb = sqlx::QueryBuilder::new("");
            qb.push(format!("SELECT {cols}, 0 AS used_as, c.id AS owner FROM credentials c WHERE c.id"));
            push_in(&mut qb, &servers);
            qb.push(format!(
                " UNION ALL SELECT {cols}, 1 AS used_as, p.id AS owner FROM credentials c \
                 JOIN project_vault_credentials v ON v.credential_id = c.id \
                 JOIN playbooks p ON p.project_id = v.project_id WHERE p.id"
            ));
            push_in(&mut qb, &playbooks);
            // Batches of many jobs vary in shape: those stay out of the statement cache. A
            // job's own, and a launch's read of one job's (a few shapes each: none, one or two
            // server credentials, none or one named), are on every launch's path, and prepared
            // once.
            let one = match named {
                Named::OfJobs(ids) => {
                    qb.push(format!(
                        " UNION ALL SELECT {cols}, 2 AS used_as, j.job_id AS owner FROM credentials c \
                         JOIN job_credentials j ON j.credential_id = c.id WHERE j.job_id"
                    ));
                    push_in(&mut qb, ids);
                    ids.len() == 1
                }
                Named::Ids(ids) => {
                    qb.push(format!(
                        " UNION ALL SELECT {cols}, 2 AS used_as, {} AS owner FROM credentials c WHERE c.id",
                        LAUNCHING.0
                    ));
                    push_in(&mut qb, ids);
                    ids.len() <= 1
                }
            };
            qb.build_query_as::<OwnedRow>().persistent(one).fetch_all(p).await?
        });
        let mut batch = BatchCredentials::default();
        for r in rows {
            match r.used_as {
                0 => {
                    batch.servers.insert(r.credential.id, r.credential);
                }
                1 => batch
                    .vaults
                    .entry(PlaybookId(r.owner))
                    .or_default()
                    .push(r.credential),
                2 => batch
                    .launch
                    .entry(JobId(r.owner))
                    .or_default()
                    .push(r.credential),
                other => {
                    return Err(StoreError::invalid(
                        "used_as",
                        format!("{other} is none of the query's own"),
                    ))
                }
            }
        }
        for list in batch.vaults.values_mut().chain(batch.launch.values_mut()) {
            list.sort_unstable_by_key(|c| c.id);
        }
        Ok(batch)
    }
}

/// Whose launch credentials the read takes: the jobs' own rows, or the ids a launch names.
#[derive(Clone, Copy)]
enum Named<'a> {
    OfJobs(&'a [JobId]),
    Ids(&'a [CredentialId]),
}

/// The owner the launch's named credentials are read under, before its job has an id.
const LAUNCHING: JobId = JobId(0);

fn prefixed(prefix: &str) -> String {
    COLUMNS
        .split(", ")
        .map(|c| format!("{prefix}{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}
