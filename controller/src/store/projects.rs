//! store::projects — projects, their revisions and the playbook rows a sync makes of their
//! files. A sync is claimed with one conditional UPDATE (as jobs are), so two controllers never
//! sync one project at once; its result (a revision, the playbook rows, the new current
//! revision) is written in one transaction, so a failed sync leaves the previous one whole.

use serde_json::json;

use super::audit::{insert_audit, Actor, NewAudit};
use super::{now, on_pool, page, InsertedId, Result, Store, StoreError, WritePool};
use crate::model::{
    Page, Paging, Playbook, PlaybookId, Project, ProjectId, ProjectKind, Revision, RevisionId,
};

const COLUMNS: &str =
    "id, name, description, kind, git_url, git_ref, git_key_path, git_credential_id, \
     inventory_path, sync_state, sync_error, sync_started_at, synced_at, current_revision_id, \
     is_active, created_at, updated_at";

const REVISION_COLUMNS: &str =
    "id, project_id, digest, git_commit, size_bytes, entries, created_at";

/// A new project (its tree comes with its first sync).
#[derive(Debug, Clone)]
pub struct NewProject {
    pub name: String,
    pub description: Option<String>,
    pub kind: ProjectKind,
    pub git_url: Option<String>,
    pub git_ref: Option<String>,
    pub git_key_path: Option<String>,
    /// An `ssh_key` credential for git (the service checks the kind).
    pub git_credential_id: Option<crate::model::CredentialId>,
    pub inventory_path: Option<String>,
}

impl NewProject {
    fn check(&self) -> Result<()> {
        check_len("name", Some(&self.name), 1, 255)?;
        check_len("git_url", self.git_url.as_deref(), 1, 1000)?;
        check_len("git_ref", self.git_ref.as_deref(), 1, 255)?;
        check_len("git_key_path", self.git_key_path.as_deref(), 1, 500)?;
        check_len("inventory_path", self.inventory_path.as_deref(), 1, 500)?;
        if (self.kind == ProjectKind::Git) != self.git_url.is_some() {
            return Err(StoreError::invalid(
                "git_url",
                "a git project has a URL, and only a git project has one",
            ));
        }
        Ok(())
    }
}

fn check_len(field: &'static str, v: Option<&str>, min: usize, max: usize) -> Result<()> {
    match v {
        Some(s) if s.chars().count() < min || s.chars().count() > max => Err(StoreError::invalid(
            field,
            format!("must be {min} to {max} characters"),
        )),
        _ => Ok(()),
    }
}

/// A playbook file found in a revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaybookFile {
    /// The row's name when it is made: `<project>/<file_path>` (for a one-file project, the
    /// project's name). An existing row keeps its name.
    pub name: String,
    /// Relative to the project's root.
    pub file_path: String,
    /// Lower-case hex SHA-256 of the file.
    pub file_hash: String,
}

/// What a successful sync produced.
#[derive(Debug, Clone)]
pub struct NewRevision {
    pub digest: String,
    pub git_commit: Option<String>,
    pub size_bytes: u64,
    pub entries: u32,
}

impl Store {
    pub async fn create_project(&self, new: &NewProject, actor: &Actor) -> Result<Project> {
        new.check()?;
        let ts = now();
        let id = on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let res = sqlx::query(
                "INSERT INTO projects (name, description, kind, git_url, git_ref, git_key_path, \
                 git_credential_id, inventory_path, sync_state, is_active, created_at, updated_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'never', ?, ?, ?)",
            )
            .bind(&new.name).bind(&new.description).bind(new.kind.as_str()).bind(&new.git_url)
            .bind(&new.git_ref).bind(&new.git_key_path).bind(new.git_credential_id).bind(&new.inventory_path)
            .bind(true).bind(ts).bind(ts)
            .execute(&mut *tx).await
            .map_err(|e| StoreError::on_write(e, || format!("project '{}'", new.name)))?;
            let id = res.inserted_id() as i32;
            insert_audit!(&mut *tx, &NewAudit {
                actor, action: "CREATE", resource_type: "project", resource_id: Some(id),
                details: Some(json!({"name": new.name, "kind": new.kind.as_str(), "git_url": new.git_url, "git_ref": new.git_ref})),
            })?;
            tx.commit().await?;
            id
        });
        self.get_project(ProjectId(id)).await
    }

    pub async fn get_project(&self, id: ProjectId) -> Result<Project> {
        let sql = format!("SELECT {COLUMNS} FROM projects WHERE id = ?");
        let row = on_pool!(self, p => sqlx::query_as::<_, Project>(&sql).bind(id).fetch_optional(p).await?);
        row.ok_or_else(|| StoreError::NotFound(format!("project {id}")))
    }

    pub async fn get_project_by_name(&self, name: &str) -> Result<Project> {
        let sql = format!("SELECT {COLUMNS} FROM projects WHERE name = ?");
        let row = on_pool!(self, p => sqlx::query_as::<_, Project>(&sql).bind(name).fetch_optional(p).await?);
        row.ok_or_else(|| StoreError::NotFound(format!("project '{name}'")))
    }

    /// Projects ordered by name.
    pub async fn list_projects(
        &self,
        kind: Option<ProjectKind>,
        paging: Paging,
    ) -> Result<Page<Project>> {
        let kind = kind.map(ProjectKind::as_str);
        Ok(
            page!(self, Project, select: COLUMNS, from: "projects", order: "name", paging: paging,
            filters: [("kind", kind)]),
        )
    }

    /// Changes a project's settings (not its kind, nor its sync state).
    pub async fn update_project(
        &self,
        id: ProjectId,
        new: &NewProject,
        is_active: bool,
        actor: &Actor,
    ) -> Result<Project> {
        new.check()?;
        let old = self.get_project(id).await?;
        if old.kind != new.kind {
            return Err(StoreError::invalid(
                "kind",
                "a project's kind cannot change",
            ));
        }
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            sqlx::query(
                "UPDATE projects SET name = ?, description = ?, git_url = ?, git_ref = ?, \
                 git_key_path = ?, git_credential_id = ?, inventory_path = ?, is_active = ?, updated_at = ? WHERE id = ?",
            )
            .bind(&new.name).bind(&new.description).bind(&new.git_url).bind(&new.git_ref)
            .bind(&new.git_key_path).bind(new.git_credential_id).bind(&new.inventory_path).bind(is_active).bind(now()).bind(id)
            .execute(&mut *tx).await
            .map_err(|e| StoreError::on_write(e, || format!("project '{}'", new.name)))?;
            insert_audit!(&mut *tx, &NewAudit {
                actor, action: "UPDATE", resource_type: "project", resource_id: Some(id.0),
                details: Some(json!({
                    "old": {"name": old.name, "git_url": old.git_url, "git_ref": old.git_ref, "is_active": old.is_active, "git_credential_id": old.git_credential_id},
                    "new": {"name": new.name, "git_url": new.git_url, "git_ref": new.git_ref, "is_active": is_active, "git_credential_id": new.git_credential_id},
                })),
            })?;
            tx.commit().await?;
        });
        self.get_project(id).await
    }

    /// Deletes a project no job ran, with its playbook rows and revisions (the caller removes
    /// revision files no other project shares). One whose playbooks have jobs can only be
    /// deactivated.
    pub async fn delete_project(&self, id: ProjectId, actor: &Actor) -> Result<Vec<String>> {
        let project = self.get_project(id).await?;
        let jobs: i64 = on_pool!(self, p => sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE playbook_id IN (SELECT id FROM playbooks WHERE project_id = ?) \
             OR revision_id IN (SELECT id FROM project_revisions WHERE project_id = ?)")
            .bind(id).bind(id).fetch_one(p).await?);
        let in_use = || StoreError::InUse {
            what: format!("project {}", project.name),
            count: jobs,
            dependents: "jobs",
            hint: "deactivate it instead",
        };
        if jobs > 0 {
            return Err(in_use());
        }
        let digests: Vec<String> = on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let digests: Vec<String> = sqlx::query_scalar("SELECT digest FROM project_revisions WHERE project_id = ?")
                .bind(id).fetch_all(&mut *tx).await?;
            let fk = |e: sqlx::Error| match &e {
                sqlx::Error::Database(db) if db.is_foreign_key_violation() => in_use(),
                _ => StoreError::Database(e),
            };
            sqlx::query("DELETE FROM playbooks WHERE project_id = ?").bind(id).execute(&mut *tx).await.map_err(fk)?;
            sqlx::query("DELETE FROM project_revisions WHERE project_id = ?").bind(id).execute(&mut *tx).await.map_err(fk)?;
            sqlx::query("DELETE FROM projects WHERE id = ?").bind(id).execute(&mut *tx).await.map_err(fk)?;
            insert_audit!(&mut *tx, &NewAudit {
                actor, action: "DELETE", resource_type: "project", resource_id: Some(id.0),
                details: Some(json!({"name": project.name})),
            })?;
            tx.commit().await?;
            digests
        });
        // Only the digests no other project still has.
        let mut orphans = Vec::new();
        for d in digests {
            let others: i64 = on_pool!(self, p => sqlx::query_scalar(
                "SELECT COUNT(*) FROM project_revisions WHERE digest = ?").bind(&d).fetch_one(p).await?);
            if others == 0 {
                orphans.push(d);
            }
        }
        Ok(orphans)
    }

    /// Claims the project's sync: true when this caller may run it, false when another sync
    /// holds it. A claim older than twice the sync time limit (and a minute) is taken over:
    /// its controller died before it could finish or fail it.
    pub async fn claim_sync(&self, id: ProjectId, time_limit: std::time::Duration) -> Result<bool> {
        let ts = now();
        let expiry =
            chrono::Duration::from_std(time_limit * 2 + std::time::Duration::from_secs(60))
                .unwrap_or(chrono::Duration::hours(2));
        let stale = ts - expiry;
        let done = on_pool!(self, p => sqlx::query(
            "UPDATE projects SET sync_state = 'syncing', sync_started_at = ?, updated_at = ? \
             WHERE id = ? AND (sync_state <> 'syncing' OR sync_started_at IS NULL OR sync_started_at < ?)")
            .bind(ts).bind(ts).bind(id).bind(stale).execute(p).await?.rows_affected());
        Ok(done == 1)
    }

    /// Ends a claimed sync as failed: the current revision stays, the reason is kept.
    pub async fn fail_sync(&self, id: ProjectId, reason: &str, actor: &Actor) -> Result<()> {
        let reason = crate::text::fit_bytes(reason, crate::text::TEXT_BYTES);
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            sqlx::query(
                "UPDATE projects SET sync_state = 'failed', sync_error = ?, updated_at = ? WHERE id = ?")
                .bind(reason.as_ref()).bind(now()).bind(id).execute(&mut *tx).await?;
            insert_audit!(&mut *tx, &NewAudit {
                actor, action: "SYNC_FAILED", resource_type: "project", resource_id: Some(id.0),
                details: Some(json!({"error": crate::text::fit_chars(&reason, crate::text::AUDIT_STRING_CHARS)})),
            })?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Ends a claimed sync with its revision: the revision row (or the project's existing one
    /// of the same digest), the playbook rows of its files (made, updated, or deactivated when
    /// their file is gone), and the project's current revision — all or nothing.
    pub async fn finish_sync(
        &self,
        id: ProjectId,
        rev: &NewRevision,
        playbooks: &[PlaybookFile],
        actor: &Actor,
    ) -> Result<Revision> {
        let ts = now();
        let size = i64::try_from(rev.size_bytes)
            .map_err(|_| StoreError::invalid("size_bytes", "too large"))?;
        let rev_id = on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            // The project's row first: two syncs of one project finish one after the other
            // (MySQL holds the row's lock to the commit), the second finding the first's rows.
            sqlx::query("UPDATE projects SET updated_at = ? WHERE id = ?")
                .bind(ts).bind(id).execute(&mut *tx).await?;
            let existing: Option<i32> = sqlx::query_scalar(
                "SELECT id FROM project_revisions WHERE project_id = ? AND digest = ?")
                .bind(id).bind(&rev.digest).fetch_optional(&mut *tx).await?;
            let rev_id = match existing {
                Some(r) => r,
                None => sqlx::query(
                    "INSERT INTO project_revisions (project_id, digest, git_commit, size_bytes, entries, created_at) \
                     VALUES (?, ?, ?, ?, ?, ?)")
                    .bind(id).bind(&rev.digest).bind(&rev.git_commit).bind(size).bind(rev.entries as i32).bind(ts)
                    .execute(&mut *tx).await?.inserted_id() as i32,
            };
            let rows: Vec<(i32, String, String, bool)> = sqlx::query_as(
                "SELECT id, file_path, file_hash, is_active FROM playbooks WHERE project_id = ?")
                .bind(id).fetch_all(&mut *tx).await?;
            for pb in playbooks {
                match rows.iter().find(|r| r.1 == pb.file_path) {
                    Some((row, _, hash, active)) if *hash != pb.file_hash || !*active => {
                        sqlx::query("UPDATE playbooks SET file_hash = ?, is_active = ?, updated_at = ? WHERE id = ?")
                            .bind(&pb.file_hash).bind(true).bind(ts).bind(row).execute(&mut *tx).await?;
                    }
                    Some(_) => {}
                    None => {
                        sqlx::query(
                            "INSERT INTO playbooks (name, file_path, file_hash, is_active, project_id, created_at, updated_at) \
                             VALUES (?, ?, ?, ?, ?, ?, ?)")
                            .bind(&pb.name).bind(&pb.file_path).bind(&pb.file_hash).bind(true).bind(id).bind(ts).bind(ts)
                            .execute(&mut *tx).await
                            .map_err(|e| StoreError::on_write(e, || format!(
                                "a playbook named '{}' (of another project, or uploaded alone)", pb.name)))?;
                    }
                }
            }
            for (row, path, _, active) in &rows {
                if *active && !playbooks.iter().any(|pb| &pb.file_path == path) {
                    sqlx::query("UPDATE playbooks SET is_active = ?, updated_at = ? WHERE id = ?")
                        .bind(false).bind(ts).bind(row).execute(&mut *tx).await?;
                }
            }
            sqlx::query(
                "UPDATE projects SET current_revision_id = ?, sync_state = 'ok', sync_error = NULL, \
                 synced_at = ?, updated_at = ? WHERE id = ?")
                .bind(rev_id).bind(ts).bind(ts).bind(id).execute(&mut *tx).await?;
            insert_audit!(&mut *tx, &NewAudit {
                actor, action: "SYNC", resource_type: "project", resource_id: Some(id.0),
                details: Some(json!({"digest": rev.digest, "commit": rev.git_commit, "playbooks": playbooks.len()})),
            })?;
            tx.commit().await?;
            rev_id
        });
        self.get_revision(RevisionId(rev_id)).await
    }

    pub async fn get_revision(&self, id: RevisionId) -> Result<Revision> {
        let sql = format!("SELECT {REVISION_COLUMNS} FROM project_revisions WHERE id = ?");
        let row = on_pool!(self, p => sqlx::query_as::<_, Revision>(&sql).bind(id).fetch_optional(p).await?);
        row.ok_or_else(|| StoreError::NotFound(format!("revision {id}")))
    }

    /// A project's revision by its digest (or a unique prefix of at least 8 characters).
    pub async fn get_revision_by_digest(
        &self,
        project: ProjectId,
        digest: &str,
    ) -> Result<Revision> {
        if digest.len() < 8 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::invalid(
                "revision",
                "a digest, or at least its first 8 hex digits",
            ));
        }
        let sql = format!(
            "SELECT {REVISION_COLUMNS} FROM project_revisions WHERE project_id = ? AND digest LIKE ? \
             ORDER BY id DESC LIMIT 2"
        );
        let pattern = format!("{}%", digest.to_ascii_lowercase());
        let rows = on_pool!(self, p => sqlx::query_as::<_, Revision>(&sql).bind(project).bind(&pattern).fetch_all(p).await?);
        match rows.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(StoreError::NotFound(format!("revision {digest}"))),
            _ => Err(StoreError::invalid(
                "revision",
                format!("{digest} names more than one revision; give more of it"),
            )),
        }
    }

    /// A project's revisions, newest first.
    pub async fn list_revisions(
        &self,
        project: ProjectId,
        paging: Paging,
    ) -> Result<Page<Revision>> {
        Ok(
            page!(self, Revision, select: REVISION_COLUMNS, from: "project_revisions", order: "id DESC", paging: paging,
            filters: [("project_id", Some(project))]),
        )
    }

    /// A project's playbook rows (active or not), by path.
    pub async fn project_playbooks(&self, project: ProjectId) -> Result<Vec<Playbook>> {
        let sql = format!(
            "SELECT {} FROM playbooks WHERE project_id = ? ORDER BY file_path",
            super::playbooks::COLUMNS
        );
        Ok(
            on_pool!(self, p => sqlx::query_as::<_, Playbook>(&sql).bind(project).fetch_all(p).await?),
        )
    }

    /// The playbook row of a project's file.
    pub async fn project_playbook(&self, project: ProjectId, file_path: &str) -> Result<Playbook> {
        let sql = format!(
            "SELECT {} FROM playbooks WHERE project_id = ? AND file_path = ?",
            super::playbooks::COLUMNS
        );
        let row = on_pool!(self, p => sqlx::query_as::<_, Playbook>(&sql).bind(project).bind(file_path).fetch_optional(p).await?);
        row.ok_or_else(|| {
            StoreError::NotFound(format!("playbook {file_path} in project {project}"))
        })
    }

    /// Playbook rows made before projects (no project, an absolute file path), for adoption.
    pub async fn unadopted_playbooks(&self) -> Result<Vec<Playbook>> {
        let sql = format!(
            "SELECT {} FROM playbooks WHERE project_id IS NULL ORDER BY id",
            super::playbooks::COLUMNS
        );
        Ok(on_pool!(self, p => sqlx::query_as::<_, Playbook>(&sql).fetch_all(p).await?))
    }

    /// Makes a one-file project (kind `file`) of a playbook row, with its revision, in one
    /// transaction that touches the row only if it is still unadopted: run twice, or by two
    /// controllers at once, it adopts the row once (the other finds it adopted, or its project
    /// name taken, and returns `None`).
    pub async fn adopt_playbook(
        &self,
        playbook: PlaybookId,
        rev: &NewRevision,
        file_path: &str,
        actor: &Actor,
    ) -> Result<Option<ProjectId>> {
        let pb = self.get_playbook(playbook).await?;
        let ts = now();
        let size = i64::try_from(rev.size_bytes)
            .map_err(|_| StoreError::invalid("size_bytes", "too large"))?;
        let adopted = on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let res = sqlx::query(
                "INSERT INTO projects (name, description, kind, sync_state, synced_at, is_active, created_at, updated_at) \
                 VALUES (?, ?, 'file', 'ok', ?, ?, ?, ?)")
                .bind(&pb.name).bind(&pb.description).bind(ts).bind(pb.is_active).bind(ts).bind(ts)
                .execute(&mut *tx).await;
            let project = match res {
                Ok(r) => r.inserted_id() as i32,
                Err(sqlx::Error::Database(db)) if db.is_unique_violation() => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let rev_id = sqlx::query(
                "INSERT INTO project_revisions (project_id, digest, git_commit, size_bytes, entries, created_at) \
                 VALUES (?, ?, NULL, ?, ?, ?)")
                .bind(project).bind(&rev.digest).bind(size).bind(rev.entries as i32).bind(ts)
                .execute(&mut *tx).await?.inserted_id() as i32;
            sqlx::query("UPDATE projects SET current_revision_id = ? WHERE id = ?")
                .bind(rev_id).bind(project).execute(&mut *tx).await?;
            let moved = sqlx::query(
                "UPDATE playbooks SET project_id = ?, file_path = ? WHERE id = ? AND project_id IS NULL")
                .bind(project).bind(file_path).bind(playbook).execute(&mut *tx).await?.rows_affected();
            if moved != 1 {
                // Adopted meanwhile: the project made here goes with the rollback.
                return Ok(None);
            }
            insert_audit!(&mut *tx, &NewAudit {
                actor, action: "ADOPT", resource_type: "project", resource_id: Some(project),
                details: Some(json!({"playbook": pb.name, "digest": rev.digest, "old_file_path": pb.file_path})),
            })?;
            tx.commit().await?;
            Some(ProjectId(project))
        });
        Ok(adopted)
    }

    /// Whether any project has a revision of this digest (its file is still needed).
    pub async fn revision_digest_known(&self, digest: &str) -> Result<bool> {
        let n: i64 = on_pool!(self, p => sqlx::query_scalar(
            "SELECT COUNT(*) FROM project_revisions WHERE digest = ?").bind(digest).fetch_one(p).await?);
        Ok(n > 0)
    }
}
